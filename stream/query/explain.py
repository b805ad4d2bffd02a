"""The top factors behind one district's satisfaction in a window, from ClickHouse.

Coefficients: for each shard (the satisfaction partitions one worker learns from), the newest
publication of the district's model with ``as_of`` at or before the window end; shards whose
partitions a newer shard took over (a rebalance) are left out; the rest are pooled per factor
(:func:`stream.model.explain.combine`). Exposures: the mean of each factor per satisfaction event
in the window, for the district and for the network (``factor_exposure``). The same function
serves ``cxstream explain``, ``GET /districts/{district}/explain`` and the alert stage.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from clickhouse_connect.driver.client import Client

from ..model.explain import combine, explain
from ..model.regression import NETWORK


class DistrictNotFound(LookupError):
    def __init__(self, district: str):
        super().__init__(
            f"no factor model for district {district!r} yet: it has had no satisfaction event, or the model "
            f"has not published (every model.publish_interval); `*` is the network-wide model"
        )
        self.district = district


def _utc(v: datetime) -> datetime:
    return v if v.tzinfo else v.replace(tzinfo=timezone.utc)


def _coefficients(client: Client, db: str, district: str, end: datetime | None) -> dict[str, Any] | None:
    rows = client.query(
        f"SELECT shard, factor, argMax(coefficient, published_at), argMax(stderr, published_at), "
        f"max(published_at), argMax(n, published_at), argMax(n_eff, published_at), argMax(intercept, published_at), "
        f"argMax(residual_sd, published_at), argMax(as_of, published_at) FROM {db}.factor_coefficients "
        f"WHERE district = %(d)s {'AND as_of <= %(end)s' if end else ''} GROUP BY shard, factor",
        parameters={"d": district, "end": end},
    ).result_rows
    if not rows:
        return None
    by_shard: dict[str, list] = defaultdict(list)
    for r in rows:
        by_shard[r[0]].append(r)
    taken: list[str] = []
    owned: set[str] = set()
    for shard in sorted(by_shard, key=lambda s: max(r[4] for r in by_shard[s]), reverse=True):
        parts = set(shard.split(",")) if shard else {shard}
        if parts & owned:
            continue  # superseded: a newer shard learns from (some of) these partitions now
        taken.append(shard)
        owned |= parts
    per_factor: dict[str, list[tuple[float, float]]] = defaultdict(list)
    head = {"n": 0, "n_eff": 0.0, "intercepts": [], "residual_sd": [], "as_of": None, "published_at": None}
    for shard in taken:
        first = by_shard[shard][0]
        head["n"] += first[5]
        head["n_eff"] += first[6]
        head["intercepts"].append((first[7], first[5]))
        head["residual_sd"].append(first[8])
        as_of, published = _utc(first[9]), _utc(first[4])
        head["as_of"] = as_of if head["as_of"] is None else max(head["as_of"], as_of)
        head["published_at"] = published if head["published_at"] is None else max(head["published_at"], published)
        for r in by_shard[shard]:
            per_factor[r[1]].append((r[2], r[3]))
    n_total = sum(n for _, n in head["intercepts"]) or 1
    return {
        "shards": taken,
        "n": head["n"],
        "n_eff": head["n_eff"],
        "intercept": sum(i * n for i, n in head["intercepts"]) / n_total,
        "residual_sd": max(head["residual_sd"]),
        "as_of": head["as_of"],
        "published_at": head["published_at"],
        "coefficients": {f: combine(v) for f, v in sorted(per_factor.items())},
    }


def _exposure(client: Client, db: str, district: str | None, start: datetime, end: datetime):
    where = "bucket_start >= %(s)s AND bucket_start < %(e)s" + (" AND district = %(d)s" if district else "")
    rows = client.query(
        f"SELECT factor, sum(value_sum), sum(samples), sum(score_sum) FROM {db}.factor_exposure WHERE {where} "
        f"GROUP BY factor",
        parameters={"s": start, "e": end, "d": district},
    ).result_rows
    samples = rows[0][2] if rows else 0
    score = rows[0][3] if rows else 0.0
    means = {f: (v / n if n else 0.0) for f, v, n, _ in rows}
    return means, int(samples), (score / samples if samples else None)


def explain_district(
    client: Client,
    database: str,
    district: str,
    window: timedelta = timedelta(days=1),
    end: datetime | None = None,
    top: int | None = 5,
) -> dict[str, Any]:
    """The top factors of ``district`` (``*``: network) in ``[end - window, end)``; raises :class:`DistrictNotFound`.

    ``end`` defaults to the end of the newest hour with a satisfaction event of the district.
    """
    db = database
    scope = None if district == NETWORK else district
    if end is None:
        newest = client.query(
            f"SELECT max(bucket_start), count() FROM {db}.factor_exposure" + (" WHERE district = %(d)s" if scope else ""),
            parameters={"d": scope},
        ).result_rows
        if newest and newest[0][1]:
            end = _utc(newest[0][0]) + timedelta(hours=1)
    coef = _coefficients(client, db, district, end)
    if coef is None:
        raise DistrictNotFound(district)
    end = end or coef["as_of"]
    start = end - window
    exposure, samples, mean_score = _exposure(client, db, scope, start, end)
    network, net_samples, net_mean = _exposure(client, db, None, start, end) if scope else (exposure, samples, mean_score)
    effects = explain(district, coef["coefficients"], exposure, network, top)
    return {
        "district": district,
        "window_start": start,
        "window_end": end,
        "samples": samples,
        "mean_score": mean_score,
        "network_samples": net_samples,
        "network_mean_score": net_mean,
        "model": {k: coef[k] for k in ("n", "n_eff", "intercept", "residual_sd", "as_of", "published_at", "shards")},
        "factors": [e.as_dict() for e in effects],
    }


def format_explanation(doc: dict[str, Any]) -> str:
    """Plain-text rendering for the CLI."""
    m = doc["model"]

    def score(v):
        return "-" if v is None else f"{v:.2f}"

    lines = [
        f"District {doc['district']}  window {doc['window_start']:%Y-%m-%d %H:%M} .. {doc['window_end']:%Y-%m-%d %H:%M} UTC",
        f"  satisfaction events {doc['samples']:,}, mean score {score(doc['mean_score'])} "
        f"(network {score(doc['network_mean_score'])} over {doc['network_samples']:,})",
        f"  model: {m['n']:,} events learned (worth {m['n_eff']:,.0f}), intercept {m['intercept']:.2f}, "
        f"residual sd {m['residual_sd']:.2f}, as of {m['as_of']:%Y-%m-%d %H:%M}",
        "",
        f"  {'factor':<24} {'effect/unit':>11} {'± se':>6} {'exposure':>9} {'network':>8} {'impact':>7} {'vs net':>7}",
    ]
    for f in doc["factors"]:
        mark = "" if f["significant"] else "  (not significant)"
        lines.append(
            f"  {f['factor']:<24} {f['coefficient']:>+11.2f} {f['stderr']:>6.2f} {f['exposure']:>9.3f} "
            f"{f['network_exposure']:>8.3f} {f['impact']:>+7.2f} {f['excess']:>+7.2f}{mark}"
        )
    lines.append("")
    lines.append("  impact = effect x exposure (points of the mean score); vs net = effect x (exposure - network's)")
    return "\n".join(lines)
