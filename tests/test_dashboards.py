"""Grafana provisioning (deploy/grafana/): the files hold together, and every panel's SQL runs and returns rows.

Static checks need no Grafana: datasources and the dashboard provider are provisioned as the compose file
mounts them; dashboards have unique, stable uids; every panel and query names a provisioned datasource;
every template variable referenced is defined; links lead to existing dashboards and their variables;
every metric a Prometheus panel plots is one the worker exports.

The SQL check runs ``cxstream demo --events 20000 --seed 1`` once per module (embedded broker, the real worker,
the simulator), then opens the demo's chDB data directory, stores the data-quality report the worker's
refresh timer would have stored (the demo ends before its first tick). The factor model publishes
``factor_coefficients`` when the worker stops; where it does not (a branch without the model), the table is
created and filled with synthetic rows. The demo's alerts depend on the hour it runs (its day is cut into UTC
days differently) and nobody works its supervision tickets, so the fixture also plants an incident: hourly
complaint counts of one district go through the real alert engine and stage (firing, resolved, firing again), and
people assign, acknowledge and close the tickets it opens through the real supervision book. For each dashboard it
resolves the variables as Grafana would (each query variable runs its SQL, chained ones after the ones they depend
on), expands the ClickHouse plugin's macros for a fixed time range covering the simulated days
(tests/grafana_sql.py), runs every ClickHouse query and asserts it returns at least one row. It does so twice: with every multi-value variable on "All" (the dashboards'
default), and drilled down: each variable a data link sets (province, city, district) on its first option.
The factor panels also run over hand-made multi-shard rows and must pool shards as ``cxstream explain`` does.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.exceptions import ClickHouseError

from .grafana_sql import BUILTIN_NAMES, Context, UnresolvedReference, expand, interval_seconds, iter_panels, references

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
DATABASE = "cxstream"

#: the shape of the factor model's output table (issue 5; stream/sink/ddl/0007_factor_model.sql), for synthetic rows
FACTOR_DDL = """
CREATE TABLE IF NOT EXISTS {db}.factor_coefficients
(
    published_at DateTime64(3, 'UTC'),
    as_of        DateTime64(3, 'UTC'),
    shard        String,
    district     LowCardinality(String),
    province     LowCardinality(String),
    city         LowCardinality(String),
    factor       LowCardinality(String),
    coefficient  Float64,
    stderr       Float64,
    n            UInt64,
    n_eff        Float64,
    intercept    Float64,
    residual_sd  Float64
)
ENGINE = MergeTree
ORDER BY (district, factor, as_of)
"""
FACTOR_COLUMNS = re.findall(r"^    (\w+) ", FACTOR_DDL, re.MULTILINE)

#: The planted incident: complaints per hour in one district (the drill-down's target) from the range's first
#: hour, judged by the complaint_surge rule of topology.yaml (>= 80 an hour, resolved after two clear hours).
#: Three episodes: 03:00-08:00 (resolved), 11:00-15:00 (resolved) and from 18:00 (still firing at the end).
INCIDENT = [8, 10, 9, 96, 124, 102, 30, 12, 9, 11, 8, 88, 97, 14, 10, 9, 8, 12, 92, 131, 118, 140, 126, 133]
#: What people do with the three tickets the incident opens: (episode, minutes after opening, action, by, detail).
#: The first is closed after its alert resolved, the second while its alert is still firing (closed while bad),
#: the third is acknowledged and stays open.
SUPERVISION = [
    (0, 8, "assign", "duty.manager", "li.wei"),
    (0, 19, "acknowledge", "li.wei", "crew dispatched to the street cabinet"),
    (0, 295, "close", "li.wei", "cabinet power restored, complaints back to normal"),
    (1, 12, "acknowledge", "zhang.min", "checking the cell site"),
    (1, 80, "close", "zhang.min", "looks like the morning incident again"),
    (2, 15, "assign", "duty.manager", "chen.jing"),
    (2, 41, "acknowledge", "chen.jing", "escalated to network operations"),
]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


DASHBOARDS: dict[str, dict[str, Any]] = {p.stem: _load(p) for p in DASHBOARD_FILES}


def _datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text())
    return {d["uid"]: d for d in doc["datasources"]}


def _targets(panel: dict[str, Any]) -> list[dict[str, Any]]:
    return panel.get("targets") or []


def _is_clickhouse(ds: dict[str, Any] | None) -> bool:
    return bool(ds) and ds.get("type") == CLICKHOUSE_TYPE


def _variable_sql(var: dict[str, Any]) -> str:
    query = var.get("query")
    if isinstance(query, dict):  # the plugin's newer variable editor stores an object
        return query.get("rawSql") or query.get("query") or ""
    return str(query or "")


def _links(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, url) of every data link and panel link of a dashboard."""
    out = []
    for panel in iter_panels(dashboard):
        where = f"panel {panel.get('title')!r}"
        for link in panel.get("links") or []:
            out.append((where, link.get("url", "")))
        fc = panel.get("fieldConfig") or {}
        for link in (fc.get("defaults") or {}).get("links") or []:
            out.append((where, link.get("url", "")))
        for override in fc.get("overrides") or []:
            for prop in override.get("properties") or []:
                if prop.get("id") == "links":
                    out.extend((where, link.get("url", "")) for link in prop.get("value") or [])
    return out


# --------------------------------------------------------------------------- provisioning files


def test_datasources_are_provisioned_for_the_compose_stack():
    ds = _datasources()
    ch = ds["clickhouse"]
    assert ch["type"] == CLICKHOUSE_TYPE
    assert ch["jsonData"]["host"] == "clickhouse" and ch["jsonData"]["port"] == 8123
    assert ch["jsonData"]["protocol"] == "http" and ch["jsonData"]["defaultDatabase"] == DATABASE
    assert ch["jsonData"]["username"] == "$CLICKHOUSE_USER"
    assert ch["secureJsonData"]["password"] == "$CLICKHOUSE_PASSWORD"
    prom = ds["prometheus"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090"


def test_dashboard_provider_loads_the_mounted_directory():
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --------------------------------------------------------------------------- dashboard structure


def test_dashboards_have_unique_stable_uids_and_titles():
    assert len(DASHBOARDS) >= 8, [p.name for p in DASHBOARD_FILES]
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for name, d in DASHBOARDS.items():
        assert re.fullmatch(r"cx-[a-z0-9-]{1,37}", d["uid"]), name  # stable, short, links depend on them
        assert d.get("id") is None, f"{name}: a provisioned dashboard must not carry a database id"
        assert d["schemaVersion"] >= 39 and "cxstream" in d["tags"], name


@pytest.mark.parametrize("name", DASHBOARDS)
def test_panels_use_provisioned_datasources(name):
    ds = _datasources()
    d = DASHBOARDS[name]
    ids = [p["id"] for p in d["panels"]] + [q["id"] for p in d["panels"] for q in p.get("panels", [])]
    assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
    for panel in iter_panels(d):
        where = f"{name}: panel {panel.get('title')!r}"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), where
        if panel["type"] == "text":
            continue
        pds = panel.get("datasource") or {}
        assert pds.get("uid") in ds and pds.get("type") == ds[pds["uid"]]["type"], where
        assert _targets(panel), f"{where}: no query"
        for t in _targets(panel):
            tds = t.get("datasource") or pds
            assert tds.get("uid") in ds and tds.get("type") == ds[tds["uid"]]["type"], where
            if _is_clickhouse(tds):
                assert t.get("editorType") == "sql" and t.get("rawSql", "").strip(), where
                assert t.get("format") in (0, 1), f"{where}: format 0 (time series) or 1 (table)"
            else:
                assert t.get("expr", "").strip(), where
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            vds = var.get("datasource") or {}
            assert vds.get("uid") in ds and vds.get("type") == ds[vds["uid"]]["type"], f"{name}: ${var['name']}"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_template_variables_referenced_are_defined(name):
    d = DASHBOARDS[name]
    defined: list[str] = []
    for var in d["templating"]["list"]:
        # A variable may only use variables defined before it (Grafana resolves them in order).
        used = references(_variable_sql(var)) - BUILTIN_NAMES
        assert used <= set(defined), f"{name}: ${var['name']} uses {sorted(used - set(defined))}, not defined before it"
        defined.append(var["name"])
    assert len(set(defined)) == len(defined), f"{name}: duplicate variable names"
    for panel in iter_panels(d):  # queries, titles, display names, links, descriptions
        unknown = {n for n in references(json.dumps(panel)) if n not in defined and n not in BUILTIN_NAMES}
        assert not unknown, f"{name}: panel {panel.get('title')!r} refers to undefined {sorted(unknown)}"


def test_links_point_to_existing_dashboards_and_variables():
    by_uid = {d["uid"]: d for d in DASHBOARDS.values()}
    tags = {t for d in DASHBOARDS.values() for t in d.get("tags", [])}
    n = 0
    for name, d in DASHBOARDS.items():
        for link in d.get("links", []):
            if link.get("type") == "dashboards":
                assert set(link.get("tags", [])) <= tags, f"{name}: dashboard link by tags {link.get('tags')}"
            else:
                m = re.match(r"/d/([^/?]+)", link.get("url", ""))
                assert m is None or m[1] in by_uid, f"{name}: link to {link.get('url')}"
        for where, url in _links(d):
            if re.fullmatch(r"\$\{__value\.raw\}|\$\{__data\.fields\.\w+\}", url):
                continue  # a URL the row itself carries (an alert's runbook); the SQL test checks the field is there
            m = re.match(r"/d/([^/?]+)", url)
            assert m, f"{name}: {where}: data links here stay inside Grafana (/d/uid/...), got {url!r}"
            target = by_uid.get(m[1])
            assert target, f"{name}: {where}: no dashboard with uid {m[1]!r}"
            target_vars = {v["name"] for v in target["templating"]["list"]}
            for var in re.findall(r"[?&]var-(\w+)=", url):
                assert var in target_vars, f"{name}: {where}: {m[1]} has no variable {var!r}"
            n += 1
    assert n, "no data links at all: the overview must drill down"


def _metric_samples() -> set[str]:
    """Sample names the worker can expose: every metric object of the package's metric modules."""
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names = set()
    for module in ("stream.runtime.metrics", "stream.quality.metrics", "stream.reference.subscribers"):
        for obj in vars(importlib.import_module(module)).values():
            if isinstance(obj, MetricWrapperBase):
                for family in obj.describe():
                    names.update(family.name + s for s in suffixes[family.type])
    return names


def test_prometheus_panels_plot_metrics_the_worker_exports():
    samples = _metric_samples()
    assert "cxstream_events_total" in samples and "cxstream_batch_seconds_bucket" in samples
    used = 0
    for name, d in DASHBOARDS.items():
        exprs = [(f"panel {p.get('title')!r}", t.get("expr", "")) for p in iter_panels(d) for t in _targets(p)]
        exprs += [(f"${v['name']}", _variable_sql(v)) for v in d["templating"]["list"] if v["type"] == "query"]
        for where, expr in exprs:
            for metric in re.findall(r"\bcxstream_\w+", expr):
                assert metric in samples, f"{name}: {where}: {metric} is not a metric of stream/*/metrics.py"
                used += 1
    assert used


# --------------------------------------------------------------------------- the SQL, on chDB

#: dashboards with at least one ClickHouse query (pipeline health is Prometheus only)
SQL_DASHBOARDS = [
    name
    for name, d in DASHBOARDS.items()
    if any(_is_clickhouse(t.get("datasource") or p.get("datasource")) for p in iter_panels(d) for t in _targets(p))
]


def _synthetic_factor_rows(t0: datetime, t1: datetime) -> list[list[Any]]:
    """A network-wide and two district models, five factors, an estimate every 2 h (one republished)."""
    models = [("*", "*", "*"), ("P01-C03-D05", "P01", "P01-C03"), ("P02-C02-D02", "P02", "P02-C02")]
    factors = {
        "complaints_installation": -0.8,
        "complaints_network": -1.0,
        "sla_breach": -0.8,
        "reopen": -1.0,
        "closure_unresolved": -1.6,
    }
    rows = []
    steps = int((t1 - t0) / timedelta(hours=2))
    for i in range(steps):
        as_of = t0 + timedelta(hours=2 * i + 1)
        for k, (district, province, city) in enumerate(models):
            for j, (factor, effect) in enumerate(factors.items()):
                local = -2.0 if (district, factor) == ("P01-C03-D05", "complaints_installation") else 0.0
                coef = effect + local + 0.3 * (-1) ** (i + j) / (i + 1)
                n = 40 * (i + 1) // (k + 1)
                base = [as_of, "0", district, province, city, factor, coef, 0.5 / (i + 1) ** 0.5, n, n * 0.9, 8.3, 1.0]
                rows.append([as_of + timedelta(seconds=30), *base])
                if i == 1 and k == 0:  # a republished estimate of the same as_of: the newest must win
                    rows.append([as_of + timedelta(minutes=5), *base[:6], coef + 0.01, *base[7:]])
    return rows


def _plant_incident(client, topology, t0: datetime, place: dict[str, str]) -> None:
    """Store the planted incident (:data:`INCIDENT`) as the worker would: the real engine judges the district's
    hourly cells (each hour seen at :20 and :50, the watermark 5 min behind), the real stage turns transitions
    into ``alerts`` rows and opens supervision tickets, and the supervision book applies :data:`SUPERVISION`.
    Processing time is event time here (a live stream), so ``evaluated_at`` and ticket times fall in the range.
    Only alert and supervision rows are stored: the indicator tables do not show the planted complaints."""
    import numpy as np

    from stream.alerts.engine import CellUpdate
    from stream.alerts.stage import AlertStage
    from stream.indicators.counters import INDEX, WIDTH

    rules = [r for r in topology.alerts.rules if r.name == "complaint_surge"]
    assert rules, "topology.yaml has no complaint_surge rule"
    stage = AlertStage(topology.alerts.model_copy(update={"rules": rules}), topology.indicators, DATABASE)
    docs, opened = [], []
    for hour, complaints in enumerate(INCIDENT):
        start = int((t0 + timedelta(hours=hour)).timestamp())
        for minute in (20, 50):
            row = np.zeros(WIDTH)
            row[INDEX["complaints"]] = round(complaints * minute / 60) if minute == 20 else complaints
            cell = CellUpdate("1h", start, start + 3600, place["province"], place["city"], place["district"],
                              "hotline", "mobile", 1, row)  # fmt: skip
            now = t0 + timedelta(hours=hour, minutes=minute)
            out = stage.apply([cell], int(now.timestamp() * 1000), now, watermark=now - timedelta(minutes=5))
            docs += out.alerts
            opened += [(t, e) for t, e in zip(out.tickets, out.supervision, strict=True)]
    assert [d["status"] for d in docs] == ["firing", "resolved", "firing", "resolved", "firing"], docs
    client.insert_arrow(f"{DATABASE}.alerts", stage.alerts_table(docs))

    def alert_status(alert_id: str, at: datetime) -> str:
        return [d["status"] for d in docs if d["alert_id"] == alert_id and d["evaluated_at"] <= at][-1]

    changes = [(t.opened_at, t, e) for t, e in opened]
    for episode, minutes, action, by, detail in SUPERVISION:
        ticket = stage.book.get(opened[episode][0].ticket_id)
        at = ticket.opened_at + timedelta(minutes=minutes)
        status = alert_status(ticket.alert_id, at)
        if action == "assign":
            t, e = stage.book.assign(ticket.ticket_id, detail, by, "", at, status)
        else:
            t, e = getattr(stage.book, action)(ticket.ticket_id, by, detail, at, status)
        changes.append((at, t, e))
    assert [t.closed_while_bad for _, t, _ in changes[-len(SUPERVISION) :] if t.status == "closed"] == [False, True]
    for at, ticket, event in changes:  # one version per change, as the worker stores them
        events, tickets = stage.supervision_tables([event], [ticket], at)
        client.insert_arrow(f"{DATABASE}.supervision_events", events)
        client.insert_arrow(f"{DATABASE}.supervision_tickets", tickets)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(client, time_from, time_to): chDB over a simulated demo day, opened after the demo's worker exited."""
    from stream.quality.report import quality_report, store_report
    from stream.settings import Settings
    from stream.sink.clickhouse import connect
    from stream.topology import load_topology

    data_dir = tmp_path_factory.mktemp("dashboards")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    env |= {"CXSTREAM_DATA_DIR": str(data_dir), "CXSTREAM_TOPOLOGY": str(ROOT / "topology.yaml")}
    out = subprocess.run(
        [sys.executable, "-m", "stream", "demo", "--events", "20000", "--seed", "1", "--json"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    demo = json.loads(out.stdout)
    assert demo["accounted"], demo

    topology = load_topology(ROOT / "topology.yaml")
    client = connect(Settings(data_dir=Path(demo["data_dir"]), clickhouse_url=None).clickhouse_dsn)
    try:
        # What the worker's quality timer stores every refresh_interval (stream/runtime/app.py).
        report = quality_report(client, DATABASE, topology.quality.window, None, topology.state.tickets.lateness)
        assert store_report(client, DATABASE, report) > 0
        # The fixed time range: whole UTC days around the simulated events (the simulator starts the day
        # before today, so the dates move with the clock; the rows do not).
        first, last = client.query(
            f"SELECT min(event_time), max(event_time) FROM {DATABASE}.ticket_events"
        ).result_rows[0]
        t0 = datetime(first.year, first.month, first.day, tzinfo=UTC)
        t1 = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        client.command(FACTOR_DDL.format(db=DATABASE))  # exists where the factor model is wired
        if not client.query(f"SELECT count() FROM {DATABASE}.factor_coefficients").result_rows[0][0]:
            client.insert(
                f"{DATABASE}.factor_coefficients", _synthetic_factor_rows(t0, t1), column_names=FACTOR_COLUMNS
            )
        _plant_incident(client, topology, t0, _drill_target(client))
        yield client, t0, t1
    finally:
        client.close()  # chDB: one open data directory per process


def _has_data(rows: list[tuple]) -> bool:
    """At least one row with a value other than NULL, NaN or 0 (an aggregate over nothing gives one such row)."""
    return any(v is not None and v != 0 and not (isinstance(v, float) and math.isnan(v)) for row in rows for v in row)


#: variables a data link sets somewhere (province, city, district, ...): the drill-down run narrows them
LINKED_VARIABLES = {v for d in DASHBOARDS.values() for _, url in _links(d) for v in re.findall(r"[?&]var-(\w+)=", url)}


def _drill_target(client) -> dict[str, str]:
    """Province, city and district of the district with the most perception gaps (then tickets) in the dataset."""
    rows = client.query(
        "SELECT province, city, district FROM cxstream.ticket_state FINAL WHERE district != '' "
        "GROUP BY province, city, district ORDER BY countIf(perception_gap) DESC, count() DESC, district LIMIT 1"
    ).result_rows
    return dict(zip(("province", "city", "district"), rows[0], strict=True)) if rows else {}


def _resolve_variables(dashboard: dict[str, Any], client, t0: datetime, t1: datetime, drilled: bool):
    """Variable values as Grafana sets them by default, or (``drilled``) with every variable a data link sets
    narrowed to its first option, as a click on a province, city or district does."""
    values: dict[str, str | list[str]] = {}
    problems: list[str] = []
    for var in dashboard["templating"]["list"]:
        name, vtype = var["name"], var["type"]
        if vtype in ("constant", "textbox"):
            values[name] = str(var.get("query", ""))
            continue
        if vtype == "custom":
            options = [o.strip() for o in str(var["query"]).split(",") if o.strip()]
        elif vtype == "query" and _is_clickhouse(var.get("datasource")):
            sql = expand(_variable_sql(var), Context(t0, t1, 60, values))
            try:
                rows = client.query(sql).result_rows
            except ClickHouseError as exc:
                problems.append(f"${name}: {exc}\n{sql}")
                rows = []
            options = [str(r[0]) for r in rows]
            if not options:
                problems.append(f"${name}: the variable's query returned no option\n{sql}")
                options = ["(none)"]
        else:
            continue  # e.g. a Prometheus label query: not SQL
        current = (var.get("current") or {}).get("value")
        current = current if isinstance(current, list) else [current] if current else []
        if var.get("multi") or var.get("includeAll"):
            narrow = drilled and name in LINKED_VARIABLES
            if not narrow and var.get("includeAll") and (not current or "$__all" in current):
                values[name] = options
            elif narrow:  # the click goes to the busiest place (the demo's data depends on its date)
                target = _drill_target(client).get(name)
                values[name] = [target] if target in options else options[:1]
            else:
                values[name] = [c for c in current if c in options] or options[:1]
            if not var.get("multi"):
                values[name] = values[name] if len(values[name]) > 1 else values[name][0]
        else:
            values[name] = current[0] if current and current[0] in options else options[0]
    return values, problems


@pytest.mark.integration
@pytest.mark.parametrize("drilled", [False, True], ids=["all", "drilled"])
@pytest.mark.parametrize("name", SQL_DASHBOARDS)
def test_every_clickhouse_query_returns_rows(dataset, name, drilled):
    client, t0, t1 = dataset
    d = DASHBOARDS[name]
    variables, problems = _resolve_variables(d, client, t0, t1, drilled)
    ran = 0
    for panel in iter_panels(d):
        for t in _targets(panel):
            if not _is_clickhouse(t.get("datasource") or panel.get("datasource")):
                continue
            where = f"panel {panel.get('title')!r} ({t['refId']})"
            try:
                sql = expand(t["rawSql"], Context(t0, t1, interval_seconds(panel, t0, t1), variables))
            except UnresolvedReference as exc:
                problems.append(f"{where}: unresolved {exc}")
                continue
            try:
                result = client.query(sql)
            except ClickHouseError as exc:
                problems.append(f"{where}: {str(exc)[:800]}\n{sql}")
                continue
            ran += 1
            if not _has_data(result.result_rows):
                problems.append(f"{where}: no rows (or only NULL and 0)\n{sql}")
            columns = set(result.column_names)
            if t["format"] == 0 and columns and "time" not in columns:
                problems.append(f"{where}: a time series needs a `time` column, got {sorted(columns)}")
            for _, url in _links({"panels": [panel]}):
                missing = set(re.findall(r"__data\.fields\.(\w+)", url)) - columns
                if missing:
                    problems.append(f"{where}: data link uses fields {sorted(missing)} the query does not return")
    assert ran, f"{name}: no ClickHouse query"
    assert not problems, f"{name} ({'drilled down' if drilled else 'All'}; variables {variables}):\n\n" + "\n\n".join(
        problems
    )


def test_factor_panels_pool_shards_like_cxstream_explain(dataset):
    """Hand-made publications of one district model by three shards: the oldest shard was split by a rebalance
    (superseded), one shard republished (the newest wins), and one factor has a zero stderr (equal weights)."""
    from stream.query.explain import _coefficients

    client, t0, t1 = dataset
    db = "factor_fixture"
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(FACTOR_DDL.format(db=db))
    at = t0 + timedelta(hours=6)
    rows = []
    for shard, published, coefs, n in [
        ("0,1,2", at, {"sla_breach": (-3.0, 0.5), "reopen": (-2.0, 0.5)}, 100),  # superseded by the two below
        ("0,1", at + timedelta(hours=1), {"sla_breach": (-1.0, 0.2), "reopen": (-0.5, 0.0)}, 150),
        ("0,1", at + timedelta(hours=2), {"sla_breach": (-0.8, 0.1), "reopen": (-0.6, 0.0)}, 200),
        ("2", at + timedelta(hours=1, minutes=30), {"sla_breach": (-1.2, 0.3), "reopen": (-0.9, 0.4)}, 80),
    ]:
        for factor, (c, se) in coefs.items():
            as_of = published - timedelta(minutes=1)
            rows.append([published, as_of, shard, "D1", "P9", "P9-C1", factor, c, se, n, n * 0.9, 8.0, 1.1])
    client.insert(f"{db}.factor_coefficients", rows, column_names=FACTOR_COLUMNS)

    d = DASHBOARDS["factor-coefficients"]
    ctx = Context(t0, t1, 3600, {"district": "D1", "factor": ["reopen", "sla_breach"]})
    results = {}
    for panel in iter_panels(d):
        sql = expand(panel["targets"][0]["rawSql"], ctx)
        sql = sql.replace(f"{DATABASE}.factor_coefficients", f"{db}.factor_coefficients")
        result = client.query(sql)
        assert _has_data(result.result_rows), f"panel {panel['title']!r}: no rows\n{sql}"
        results[panel["title"]] = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]

    want = _coefficients(client, db, "D1", t1)
    assert want["shards"] == ["0,1", "2"]
    latest = {r["factor"]: r for r in results["Latest coefficients: ${district} (most negative first)"]}
    assert set(latest) == set(want["coefficients"])
    for factor, (c, se) in want["coefficients"].items():
        assert latest[factor]["Coefficient"] == pytest.approx(c, abs=1e-9), factor
        assert latest[factor]["Std. error"] == pytest.approx(se, abs=1e-9), factor
        assert latest[factor]["n"] == want["n"] == 280
