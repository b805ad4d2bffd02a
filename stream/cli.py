"""``cxstream``: the command line (also ``python -m stream``).

Every command reads connection settings from ``CXSTREAM_*`` variables and the
streams from ``topology.yaml``; ``cxstream --help`` lists the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from contextlib import contextmanager
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

from .settings import Settings
from .topology import TopologyError, load_topology


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


class _NoClickHouse(Exception):
    """ClickHouse could not be opened; the message says what to do."""


@contextmanager
def _clickhouse(settings: Settings):
    """A client on the configured ClickHouse, closed afterwards (chDB: one process per data dir)."""
    from .sink.clickhouse import connect

    try:
        client = connect(settings.clickhouse_dsn)
    except Exception as exc:
        hint = " (the embedded chDB is owned by one process at a time: stop `cxstream run` first)"
        raise _NoClickHouse(
            f"cannot open ClickHouse at {settings.clickhouse_dsn}: {exc}{hint if settings.embedded_clickhouse else ''}"
        ) from exc
    try:
        yield client
    finally:
        client.close()


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime.worker import run_worker

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_topology(settings.topology)  # fail fast with file:line before starting anything
    run_worker(settings, simulate_rate=args.simulate, simulate_seed=args.seed)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from datetime import timedelta, timezone

    from .simulate import generate
    from .simulate.publish import publish

    settings = _settings(args)
    topology = load_topology(settings.topology)
    if settings.embedded_kafka:
        print(
            "cxstream simulate publishes to a running Kafka: set CXSTREAM_KAFKA_BOOTSTRAP "
            "(or use `cxstream run --simulate RATE` / `cxstream demo`, which start the embedded broker).",
            file=sys.stderr,
        )
        return 2
    start = args.start or (datetime.now(timezone.utc) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    sim = generate(args.events, args.seed, start, malformed_share=args.malformed, resend_share=args.resend)
    sent = asyncio.run(
        publish(
            sim.records,
            bootstrap_servers=settings.kafka_bootstrap,
            topic_names={k: t.name for k, t in topology.source_topics().items()},
            rate=args.rate,
            progress=lambda n: print(f"published {n:,}/{args.events:,}", file=sys.stderr, flush=True),
        )
    )
    summary = {"published": sent, **sim.summary()}
    print(json.dumps(summary, indent=2, default=_json_default))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    result = run_demo(args.events, args.seed, _settings(args), data_dir=args.demo_dir)
    if args.json:
        print(json.dumps(result, default=_json_default))
    else:
        print(f"produced      {result['produced']:>10,}")
        print(f"ingested      {result['ingested']:>10,}")
        print(f"rejected      {result['rejected']:>10,}   (dead-lettered with reason and original bytes)")
        print(f"deduplicated  {result['deduplicated']:>10,}   (resent event_ids counted once)")
        for table, n in result["rows"].items():
            print(f"rows {table:<20} {n:>10,}")
        print(f"elapsed       {result['elapsed_s']:>10.1f} s")
        d = result["data_dir"]
        print("\nexplore it:")
        print(f"  cxstream query --data-dir {d} \"SELECT reason, count() FROM cxstream.dead_letters GROUP BY reason\"")
        if result.get("example_ticket"):
            print(f"  cxstream trace --data-dir {d} {result['example_ticket']}")
    return 0 if result["accounted"] else 1


def cmd_query(args: argparse.Namespace) -> int:
    with _clickhouse(_settings(args)) as client:
        try:
            result = client.query(args.sql)
        except Exception as exc:
            print(f"query failed: {exc}", file=sys.stderr)
            return 1
    names = list(result.column_names)
    rows = result.result_rows
    if args.json:
        print(json.dumps([dict(zip(names, row)) for row in rows], default=_json_default))
        return 0
    _print_rows([dict(zip(names, row, strict=True)) for row in rows], list(names))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=sys.stderr)
    return 0


def _from_worker(settings: Settings, path: str) -> tuple[int, bytes] | None:
    """Ask a running worker (it owns the embedded chDB); None when none is listening."""
    import urllib.error
    import urllib.request

    url = f"http://{settings.web_host}:{settings.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return None


def _worker_or_clickhouse(args, settings: Settings, path: str, not_found: type[Exception], read):
    """Ask the running worker (it owns the embedded chDB), else read ClickHouse with ``read(client, database)``.

    Returns the document, or None after printing why it was not found (a 404, or ``not_found`` raised).
    """
    answer = None if args.direct else _from_worker(settings, path)
    if answer is not None and answer[0] in (200, 404):
        doc = json.loads(answer[1])
        if answer[0] == 404:
            print(doc["error"], file=sys.stderr)
            return None
        return _revive_times(doc)
    database = load_topology(settings.topology).sink.database
    with _clickhouse(settings) as client:
        try:
            return read(client, database)
        except not_found as exc:
            print(str(exc), file=sys.stderr)
            return None


def cmd_trace(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from .query.trace import TicketNotFound, format_trace, trace

    settings = _settings(args)
    result = _worker_or_clickhouse(
        args, settings, f"/tickets/{quote(args.ticket_id, safe='')}/trace", TicketNotFound,
        lambda client, database: trace(client, database, args.ticket_id),
    )  # fmt: skip
    if result is None:
        return 1
    print(json.dumps(result, default=_json_default, indent=2) if args.json else format_trace(result))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from urllib.parse import quote, urlencode

    from .query.explain import DistrictNotFound, explain_district, format_explanation
    from .topology import parse_duration

    settings = _settings(args)
    window = parse_duration(args.window)
    query = {"window": int(window.total_seconds()), "top": args.top, **({"end": args.end.isoformat()} if args.end else {})}
    path = f"/districts/{quote(args.district, safe='')}/explain?{urlencode(query)}"
    result = _worker_or_clickhouse(
        args, settings, path, DistrictNotFound,
        lambda client, database: explain_district(client, database, args.district, window, args.end, args.top),
    )  # fmt: skip
    if result is None:
        return 1
    print(json.dumps(result, default=_json_default, indent=2) if args.json else format_explanation(result))
    return 0


def _post_worker(settings: Settings, path: str, body: dict) -> tuple[int, bytes] | None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"http://{settings.web_host}:{settings.web_port}{path}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return None


def _print_rows(rows: list[dict], columns: list[str]) -> None:
    cells = [[_json_default(r.get(c)) if not isinstance(r.get(c), (int, float, str)) else str(r.get(c)) for c in columns]
             for r in rows]  # fmt: skip
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def cmd_alerts(args: argparse.Namespace) -> int:
    settings = _settings(args)
    statuses = args.status.split(",")
    answer = None if args.direct else _from_worker(settings, f"/alerts?status={args.status}")
    if answer is not None and answer[0] == 200:
        rows = json.loads(answer[1])
    else:
        database = load_topology(settings.topology).sink.database
        with _clickhouse(settings) as client:
            r = client.query(
                f"SELECT * FROM (SELECT fingerprint, argMax(a.alert_id, a.evaluated_at) AS alert_id, any(a.rule) AS rule, "
                f"argMax(a.status, a.evaluated_at) AS status, any(a.severity) AS severity, "
                f"argMax(a.summary, a.evaluated_at) AS summary, argMax(a.since, a.evaluated_at) AS since, "
                f"max(a.evaluated_at) AS last_change FROM {database}.alerts AS a "
                f"GROUP BY fingerprint) WHERE status IN %(s)s ORDER BY last_change DESC",
                parameters={"s": statuses},
            )
            rows = [dict(zip(r.column_names, row, strict=True)) for row in r.result_rows]
    if args.json:
        print(json.dumps(rows, default=_json_default, indent=2))
    elif not rows:
        print(f"no alerts with status {args.status}")
    else:
        _print_rows(rows, ["status", "severity", "rule", "since", "summary"])
    return 0


def cmd_supervision(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    settings = _settings(args)
    action = args.action
    if action in ("assign", "ack", "close"):
        if not args.ticket_id or not args.by:
            print(f"usage: cxstream supervision {action} TICKET_ID --by NAME" + (" --to NAME" if action == "assign" else ""),
                  file=sys.stderr)  # fmt: skip
            return 2
        verb = {"ack": "acknowledge"}.get(action, action)
        answer = _post_worker(settings, f"/supervision/{quote(args.ticket_id, safe='')}/{verb}",
                              {"by": args.by, "note": args.note or "", "assignee": args.to or ""})  # fmt: skip
        if answer is None:
            print("no running worker answered: supervision changes go through `cxstream run` (it owns the alert state)",
                  file=sys.stderr)  # fmt: skip
            return 1
        status, body = answer
        doc = json.loads(body)
        if status != 200:
            print(doc.get("error", body.decode()), file=sys.stderr)
            return 1
        print(json.dumps(doc, indent=2) if args.json else
              f"{doc['ticket_id']}: {doc['status']}" + (f", assigned to {doc['assignee']}" if doc["assignee"] else "")
              + (" (closed while the alert still fires)" if doc.get("closed_while_bad") else ""))  # fmt: skip
        return 0
    database = load_topology(settings.topology).sink.database
    if action == "show":
        if not args.ticket_id:
            print("usage: cxstream supervision show TICKET_ID", file=sys.stderr)
            return 2
        answer = None if args.direct else _from_worker(settings, f"/supervision/{quote(args.ticket_id, safe='')}")
        if answer is not None and answer[0] in (200, 404):
            doc = json.loads(answer[1])
            if answer[0] == 404:
                print(doc["error"], file=sys.stderr)
                return 1
        else:
            with _clickhouse(settings) as client:
                r = client.query(f"SELECT * FROM {database}.supervision_tickets FINAL WHERE ticket_id = %(t)s",
                                 parameters={"t": args.ticket_id})  # fmt: skip
                if not r.result_rows:
                    print(f"no supervision ticket {args.ticket_id!r}", file=sys.stderr)
                    return 1
                ticket = dict(zip(r.column_names, r.result_rows[0], strict=True))
                e = client.query(f"SELECT action, status, at, by, note FROM {database}.supervision_events FINAL "
                                 f"WHERE ticket_id = %(t)s ORDER BY at", parameters={"t": args.ticket_id})  # fmt: skip
                doc = {"ticket": ticket, "events": [dict(zip(e.column_names, row, strict=True)) for row in e.result_rows]}
        if args.json:
            print(json.dumps(doc, default=_json_default, indent=2))
        else:
            t = doc["ticket"]
            print(f"{t['ticket_id']}  {t['status']}  {t['rule']} ({t['severity']})  {t['summary']}")
            _print_rows(doc["events"], ["at", "action", "status", "by", "note"])
        return 0
    answer = None if args.direct else _from_worker(settings, "/supervision" + (f"?status={args.status}" if args.status else ""))
    if answer is not None and answer[0] == 200:
        rows = json.loads(answer[1])
    else:
        with _clickhouse(settings) as client:
            where = "WHERE status = %(s)s" if args.status else ""
            r = client.query(f"SELECT * FROM {database}.supervision_tickets FINAL {where} ORDER BY opened_at DESC",
                             parameters={"s": args.status})  # fmt: skip
            rows = [dict(zip(r.column_names, row, strict=True)) for row in r.result_rows]
    if args.json:
        print(json.dumps(rows, default=_json_default, indent=2))
    elif not rows:
        print("no supervision tickets" + (f" with status {args.status}" if args.status else ""))
    else:
        _print_rows(rows, ["ticket_id", "status", "assignee", "opened_at", "time_to_ack_s", "time_to_close_s", "summary"])
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    from .quality.report import format_report, quality_report, report_from_json, report_json
    from .topology import parse_duration

    settings = _settings(args)
    topology = load_topology(settings.topology)
    window = parse_duration(args.window) if args.window else topology.quality.window
    since = args.since
    query = {"window": int(window.total_seconds()), **({"since": since.isoformat()} if since else {})}
    answer = None if args.direct else _from_worker(settings, f"/quality?{urlencode(query)}")
    if answer is not None and answer[0] == 200:
        rows = report_from_json(json.loads(answer[1]))
    else:
        with _clickhouse(settings) as client:
            rows = quality_report(client, topology.sink.database, window, since, topology.state.tickets.lateness)
    if args.json:
        print(json.dumps(report_json(rows), indent=2, default=_json_default))
    elif rows:
        print(format_report(rows))
    else:
        print("no events in the selected windows", file=sys.stderr)
    return 0


def _aware_time(text: str) -> datetime:
    """ISO 8601; a time without an offset is taken as UTC."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _revive_times(doc):
    """ISO strings from the worker's JSON back to datetimes, for the text format."""
    if isinstance(doc, dict):
        return {k: _revive_times(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_revive_times(v) for v in doc]
    if isinstance(doc, str) and len(doc) >= 19 and doc[4] == "-" and doc[10] == "T":
        try:
            return datetime.fromisoformat(doc)
        except ValueError:
            return doc
    return doc


def cmd_topology_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = args.file or settings.topology
    topology = load_topology(path)
    print(f"ok: {len(topology.topics)} topics")
    for logical, spec in topology.topics.items():
        contract = spec.contract or "-"
        print(f"  {logical:<22} {spec.name:<30} partitions={spec.partitions:<4} contract={contract}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from .contract.export import drift, export

    if args.action == "export":
        for path in export():
            print(f"wrote {path}")
        return 0
    stale = drift()
    if stale:
        print(f"schemas out of date: {', '.join(stale)}; run `cxstream schemas export`", file=sys.stderr)
        return 1
    print("schemas match the contracts")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.ingest import run_ingest_bench

    logging.basicConfig(level=logging.WARNING)
    result = run_ingest_bench(events=args.events, seed=args.seed, settings=_settings(args), repeat=args.repeat)
    print(json.dumps(result, indent=2) if args.json else result["report"])
    return 0


def cmd_bench_alerts(args: argparse.Namespace) -> int:
    from .bench.alerts import run_alert_bench

    logging.basicConfig(level=logging.WARNING)
    result = run_alert_bench(rate=args.rate, duration=args.duration, seed=args.seed, settings=_settings(args))
    print(json.dumps(result, indent=2) if args.json else result["report"])
    return 0


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from .bench.pipeline import run_pipeline_bench

    logging.basicConfig(level=logging.WARNING)
    result = run_pipeline_bench(events=args.events, seed=args.seed, settings=_settings(args), repeat=args.repeat,
                                naive_events=args.naive_events, latency_seconds=args.latency_seconds)  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else result["report"])
    return 0


def cmd_bench_state(args: argparse.Namespace) -> int:
    from .bench.state import run_state_bench

    logging.basicConfig(level=logging.WARNING)
    result = run_state_bench(customers=args.customers, settings=_settings(args))
    print(json.dumps(result, indent=2) if args.json else result["report"])
    return 0


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from .bench.compare import CompareError, run_compare

    logging.basicConfig(level=logging.WARNING)
    try:
        result = run_compare(against=args.against, events=args.events, rounds=args.rounds, seed=args.seed)
    except CompareError as exc:
        print(f"bench compare: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else result["report"])
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxstream", description="Service-perception streaming: Kafka -> Faust -> ClickHouse.")
    p.add_argument("--data-dir", type=Path, help="override CXSTREAM_DATA_DIR")
    # --data-dir is accepted after the command too (`cxstream query --data-dir X ...`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="override CXSTREAM_DATA_DIR")
    sub = p.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **kw: _add_parser(*a, parents=[common], **kw)  # type: ignore[method-assign]

    run = sub.add_parser("run", help="run the worker (embedded broker and chDB unless configured)")
    run.add_argument("--simulate", type=float, metavar="RATE", help="also publish a simulated feed at RATE events/s")
    run.add_argument("--seed", type=int, default=1, help="seed of the simulated feed")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", help="publish seeded simulated upstream traffic to CXSTREAM_KAFKA_BOOTSTRAP")
    sim.add_argument("--events", type=int, default=10_000)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--rate", type=float, help="events/s (default: as fast as possible)")
    sim.add_argument("--start", type=datetime.fromisoformat, help="first event time, ISO 8601 with offset")
    sim.add_argument("--malformed", type=float, default=0.02, help="share of malformed events (default 0.02)")
    sim.add_argument("--resend", type=float, default=0.01, help="share of resent events (default 0.01)")
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="embedded broker + worker + simulator; account for every event")
    demo.add_argument("--events", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--demo-dir", type=Path, help="where the demo keeps its data (default: <data dir>/demo)")
    demo.set_defaults(func=cmd_demo)

    q = sub.add_parser("query", help="run SQL on the configured ClickHouse and print the rows")
    q.add_argument("sql")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_query)

    tr = sub.add_parser("trace", help="one ticket's journey across systems, SLA, follow-up satisfaction")
    tr.add_argument("ticket_id")
    tr.add_argument("--json", action="store_true")
    tr.add_argument("--direct", action="store_true", help="read ClickHouse directly, not through a running worker")
    tr.set_defaults(func=cmd_trace)

    ex = sub.add_parser("explain", help="the top factors behind a district's satisfaction in a window")
    ex.add_argument("district", help="district code, or '*' for the network-wide model")
    ex.add_argument("--window", default="1d", help="window length ending at --end (default 1d)")
    ex.add_argument("--end", type=_aware_time, help="window end (ISO 8601); default: end of the newest hour with data")
    ex.add_argument("--top", type=int, default=5, help="how many factors (default 5)")
    ex.add_argument("--json", action="store_true")
    ex.add_argument("--direct", action="store_true", help="read ClickHouse directly, not through a running worker")
    ex.set_defaults(func=cmd_explain)

    al = sub.add_parser("alerts", help="current alerts (from the running worker, else ClickHouse)")
    al.add_argument("--status", default="pending,firing", help="comma-separated: pending, firing, resolved, predicted, ...")
    al.add_argument("--json", action="store_true")
    al.add_argument("--direct", action="store_true", help="read ClickHouse directly, not through a running worker")
    al.set_defaults(func=cmd_alerts)

    sv = sub.add_parser("supervision", help="supervision tickets: list, show, assign, ack, close")
    sv.add_argument("action", nargs="?", default="list", choices=["list", "show", "assign", "ack", "close"])
    sv.add_argument("ticket_id", nargs="?")
    sv.add_argument("--status", help="list: open, assigned, acknowledged or closed")
    sv.add_argument("--by", help="who makes the change")
    sv.add_argument("--to", help="assign: the assignee")
    sv.add_argument("--note", help="free text kept with the change")
    sv.add_argument("--json", action="store_true")
    sv.add_argument("--direct", action="store_true", help="read ClickHouse directly, not through a running worker")
    sv.set_defaults(func=cmd_supervision)

    qual = sub.add_parser("quality", help="data quality per source system and window")
    qual.add_argument("--window", help="window length, e.g. 1h or 1d (default: topology quality.window)")
    qual.add_argument("--since", type=datetime.fromisoformat, help="first window (ISO 8601); default: all")
    qual.add_argument("--json", action="store_true")
    qual.add_argument("--direct", action="store_true", help="read ClickHouse directly, not through a running worker")
    qual.set_defaults(func=cmd_quality)

    topo = sub.add_parser("topology", help="topology.yaml tools")
    topo_sub = topo.add_subparsers(dest="action", required=True)
    check = topo_sub.add_parser("check", help="validate topology.yaml; errors name the field and line")
    check.add_argument("file", nargs="?", type=Path)
    check.set_defaults(func=cmd_topology_check)

    sch = sub.add_parser("schemas", help="JSON Schema files for upstream teams")
    sch.add_argument("action", choices=["export", "check"])
    sch.set_defaults(func=cmd_schemas)

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="which", required=True)
    ingest = bench_sub.add_parser("ingest", help="validated events/s into ClickHouse vs a bare aiokafka loop")
    ingest.add_argument("--events", type=int, default=200_000)
    ingest.add_argument("--seed", type=int, default=7)
    ingest.add_argument("--repeat", type=int, default=3, help="runs of each pipeline; the best counts (default 3)")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(func=cmd_bench)
    lat = bench_sub.add_parser("alerts", help="event -> indicator and event -> alert latency at a fixed rate")
    lat.add_argument("--rate", type=float, default=5000, help="events/s (default 5000)")
    lat.add_argument("--duration", type=float, default=60, help="seconds of traffic (default 60)")
    lat.add_argument("--seed", type=int, default=7)
    lat.add_argument("--json", action="store_true")
    lat.set_defaults(func=cmd_bench_alerts)
    pipe = bench_sub.add_parser("pipeline", help="the whole pipeline vs bare aiokafka, Faust take() and a naive Faust agent")
    pipe.add_argument("--events", type=int, default=200_000)
    pipe.add_argument("--seed", type=int, default=7)
    pipe.add_argument("--repeat", type=int, default=2, help="runs of the full pipeline; the best counts")
    pipe.add_argument("--naive-events", type=int, default=50_000, help="events for the naive Faust agent (slow)")
    pipe.add_argument("--latency-seconds", type=float, default=30, help="seconds of the 5k events/s latency run (0: skip)")
    pipe.add_argument("--json", action="store_true")
    pipe.set_defaults(func=cmd_bench_pipeline)
    state = bench_sub.add_parser("state", help="RSS and restart-to-ready time with N active customers")
    state.add_argument("--customers", type=int, default=1_000_000)
    state.add_argument("--json", action="store_true")
    state.set_defaults(func=cmd_bench_state)
    cmp = bench_sub.add_parser(
        "compare", help="this tree against another commit: the full pipeline over one topic, alternating runs"
    )
    cmp.add_argument("--against", required=True, help="the commit to compare with (any git revision, e.g. HEAD~1)")
    cmp.add_argument("--events", type=int, default=150_000)
    cmp.add_argument("--rounds", type=int, default=3, help="runs of each tree, alternating (default 3)")
    cmp.add_argument("--seed", type=int, default=7)
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(func=cmd_bench_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except TopologyError as exc:
        print(f"invalid topology:\n{exc}", file=sys.stderr)
        return 2
    except _NoClickHouse as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
