"""Run Grafana dashboards' ClickHouse SQL outside Grafana: template variables and plugin macros, expanded.

Grafana prepares a panel's SQL in two steps before ClickHouse sees it; :func:`expand` does both, for a fixed
time range and interval:

1. **Template variables** (Grafana's frontend): ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]``
   are replaced by the variable's value, and so are the built-in variables ``$__interval``,
   ``$__interval_ms``, ``$__range``, ``$__range_s``, ``$__range_ms``, ``${__from}`` and ``${__to}``. Formats:
   ``singlequote`` (``'a','b'``, ``'`` escaped as ``\\'``), ``sqlstring`` (``'a','b'``, ``'`` doubled),
   ``doublequote``, ``csv``, ``pipe``, ``raw`` and ``text``. Without a format the ClickHouse plugin's own
   formatter applies: a list of values becomes ``'a','b'``, a single value is inserted as it is. A variable
   with "All" selected stands for every option of the variable (no custom ``allValue`` is used here).
2. **Plugin macros** (``pkg/macros/macros.go`` of grafana-clickhouse-datasource), from the time range
   ``[t0, t1]`` and the query interval:

   ===============================  ==================================================================
   ``$__timeFilter(c)``             ``c >= toDateTime(t0) AND c <= toDateTime(t1)`` (epoch seconds)
   ``$__timeFilter_ms(c)``          the same with ``fromUnixTimestamp64Milli(ms)``
   ``$__dateFilter(c)``             ``c >= toDate('YYYY-MM-DD') AND c <= toDate('YYYY-MM-DD')``
   ``$__dateTimeFilter(d, c)``      ``(date filter on d) AND (time filter on c)``; alias ``$__dt``
   ``$__fromTime`` / ``$__toTime``  ``toDateTime(t0)`` / ``toDateTime(t1)``; ``_ms``: milliseconds
   ``$__timeInterval(c)``           ``toStartOfInterval(toDateTime(c), INTERVAL <interval_s> second)``
   ``$__timeInterval_ms(c)``        ``toStartOfInterval(toDateTime64(c, 3), INTERVAL <ms> millisecond)``
   ``$__interval_s``                the interval in whole seconds (at least 1)
   ===============================  ==================================================================

A ``$`` reference left over after both steps (an undefined variable, an unknown macro) raises
:class:`UnresolvedReference`, so a typo fails the test instead of reaching ClickHouse.

The query interval is Grafana's: the time range divided by the panel's ``maxDataPoints`` (here 1000 when the
panel does not set it; Grafana uses the panel's width in pixels), at least the panel's ``interval`` (its "min
interval"). Grafana also rounds it to a "nice" step; no SQL here depends on the exact value.

>>> from datetime import datetime, timezone
>>> ctx = Context(datetime(2026, 11, 24, tzinfo=timezone.utc), datetime(2026, 11, 26, tzinfo=timezone.utc), 3600,
...               {"province": ["P01", "P02"], "window": "1h"})
>>> print(expand("SELECT $__timeInterval(t) AS time FROM x WHERE $__timeFilter(t) AND window = '${window}' "
...              "AND province IN (${province:singlequote}) AND p IN ($province) LIMIT $__interval_s", ctx))
SELECT toStartOfInterval(toDateTime(t), INTERVAL 3600 second) AS time FROM x WHERE t >= toDateTime(1795478400) \
AND t <= toDateTime(1795651200) AND window = '1h' AND province IN ('P01','P02') AND p IN ('P01','P02') LIMIT 3600
>>> try:
...     expand("SELECT 1 WHERE d = '$distric'", ctx)
... except UnresolvedReference as exc:
...     print("unresolved:", exc)
unresolved: $distric
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "BUILTIN_NAMES",
    "Context",
    "UnresolvedReference",
    "expand",
    "interval_seconds",
    "iter_panels",
    "references",
]

# Grafana's variable syntax (public/app/features/variables/utils.ts, variableRegex).
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_MACRO = re.compile(r"\$__(\w+)")

#: macros of the ClickHouse plugin's backend, and whether they take arguments
MACROS: dict[str, bool] = {
    "timeFilter": True,
    "timeFilter_ms": True,
    "dateFilter": True,
    "dateTimeFilter": True,
    "dt": True,
    "timeInterval": True,
    "timeInterval_ms": True,
    "fromTime": False,
    "toTime": False,
    "fromTime_ms": False,
    "toTime_ms": False,
    "interval_s": False,
}
#: Grafana's built-in variables, including those only meaningful in data links, display names and PromQL
BUILTIN_NAMES: frozenset[str] = frozenset(
    {
        "__interval",
        "__interval_ms",
        "__range",
        "__range_s",
        "__range_ms",
        "__rate_interval",
        "__from",
        "__to",
        "__timezone",
        "__dashboard",
        "__org",
        "__user",
        "__data",
        "__field",
        "__series",
        "__value",
        "__url_time_range",
        "__all_variables",
        "__name",
        "__cell",
    }
)


class UnresolvedReference(ValueError):
    """A ``$`` reference that is neither a variable in the context, a built-in, nor a plugin macro."""


@dataclass
class Context:
    """What Grafana knows when it runs a query: the time range, the interval and the variables' values."""

    time_from: datetime
    time_to: datetime
    interval_s: int
    variables: dict[str, str | list[str]] = field(default_factory=dict)


def interval_seconds(panel: dict[str, Any], time_from: datetime, time_to: datetime, default_points: int = 1000) -> int:
    """The query interval Grafana would give ``panel`` for this range (see the module docstring)."""
    points = int(panel.get("maxDataPoints") or default_points)
    seconds = (time_to - time_from).total_seconds() / points
    if panel.get("interval"):
        seconds = max(seconds, _duration_s(panel["interval"]))
    return max(1, int(seconds))


def _duration_s(text: str) -> float:
    m = re.fullmatch(r"[<>]?(\d+)(ms|s|m|h|d|w)", text.strip())
    if not m:
        raise ValueError(f"not a Grafana interval: {text!r}")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]
    return int(m[1]) * unit


def _hms(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _format(value: str | list[str], fmt: str | None) -> str:
    values = value if isinstance(value, list) else [value]
    if fmt is None:  # the ClickHouse plugin's formatter
        return "'" + "','".join(values) + "'" if isinstance(value, list) else value
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt in ("csv", "raw", "text"):
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    raise UnresolvedReference(f"unsupported variable format :{fmt}")


def _builtins(ctx: Context) -> dict[str, str]:
    range_s = int((ctx.time_to - ctx.time_from).total_seconds())
    return {
        "__interval": _hms(ctx.interval_s),
        "__interval_ms": str(ctx.interval_s * 1000),
        "__range": _hms(range_s),
        "__range_s": str(range_s),
        "__range_ms": str(range_s * 1000),
        "__from": str(int(ctx.time_from.timestamp() * 1000)),
        "__to": str(int(ctx.time_to.timestamp() * 1000)),
    }


def _replace_variables(sql: str, ctx: Context) -> str:
    builtins = _builtins(ctx)

    def sub(m: re.Match[str]) -> str:
        name = m[1] or m[2] or m[4]
        fmt = m[3] or m[6]
        if m[5]:  # ${name.path}: only data-link fields use this
            return m[0]
        if name in ctx.variables:
            return _format(ctx.variables[name], fmt)
        if name in builtins:
            return builtins[name]
        return m[0]  # Grafana leaves what it does not know (macros are the backend's)

    return _VARIABLE.sub(sub, sql)


def _args(sql: str, open_at: int) -> tuple[list[str], int]:
    """Arguments of the call whose ``(`` is at ``open_at`` (nested parentheses allowed), and the index after ``)``."""
    depth, start, args = 0, open_at + 1, []
    for i in range(open_at, len(sql)):
        ch = sql[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i].strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(sql[start:i].strip())
            start = i + 1
    raise UnresolvedReference(f"unbalanced parentheses after {sql[:open_at]!r}")


def _macro(name: str, args: list[str], ctx: Context) -> str:
    """The text the plugin's backend puts in place of ``$__name(args)``."""
    t0, t1 = int(ctx.time_from.timestamp()), int(ctx.time_to.timestamp())
    ms0, ms1 = int(ctx.time_from.timestamp() * 1000), int(ctx.time_to.timestamp() * 1000)
    d0, d1 = f"toDate('{ctx.time_from:%Y-%m-%d}')", f"toDate('{ctx.time_to:%Y-%m-%d}')"
    c = args[0] if args else ""
    if name == "timeFilter":
        return f"{c} >= toDateTime({t0}) AND {c} <= toDateTime({t1})"
    if name == "timeFilter_ms":
        return f"{c} >= fromUnixTimestamp64Milli({ms0}) AND {c} <= fromUnixTimestamp64Milli({ms1})"
    if name == "dateFilter":
        return f"{c} >= {d0} AND {c} <= {d1}"
    if name in ("dateTimeFilter", "dt"):
        t = args[1]
        return f"({c} >= {d0} AND {c} <= {d1}) AND ({t} >= toDateTime({t0}) AND {t} <= toDateTime({t1}))"
    if name == "timeInterval":
        return f"toStartOfInterval(toDateTime({c}), INTERVAL {ctx.interval_s} second)"
    if name == "timeInterval_ms":
        return f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {ctx.interval_s * 1000} millisecond)"
    if name == "interval_s":
        return str(ctx.interval_s)
    return {
        "fromTime": f"toDateTime({t0})",
        "toTime": f"toDateTime({t1})",
        "fromTime_ms": f"fromUnixTimestamp64Milli({ms0})",
        "toTime_ms": f"fromUnixTimestamp64Milli({ms1})",
    }[name]


def _expand_macros(sql: str, ctx: Context) -> str:
    out, pos = [], 0
    for m in _MACRO.finditer(sql):
        if m.start() < pos:
            continue  # inside the arguments of a macro already expanded
        name = m[1]
        if name not in MACROS:
            raise UnresolvedReference(f"$__{name}")
        end = m.end()
        args: list[str] = []
        if MACROS[name]:
            if end >= len(sql) or sql[end] != "(":
                raise UnresolvedReference(f"$__{name} needs arguments")
            args, end = _args(sql, end)
            want = 2 if name in ("dateTimeFilter", "dt") else 1
            if len(args) != want:
                raise UnresolvedReference(f"$__{name} takes {want} argument(s), got {args}")
        text = _macro(name, args, ctx)
        out.append(sql[pos : m.start()])
        out.append(_expand_macros(text, ctx) if "$" in text else text)
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def expand(sql: str, ctx: Context) -> str:
    """``sql`` as ClickHouse receives it from Grafana for ``ctx`` (see the module docstring)."""
    result = _expand_macros(_replace_variables(sql, ctx), ctx)
    left = re.search(r"\$\{?\w+|\[\[\w+", result)
    if left:
        raise UnresolvedReference(left[0])
    return result


def references(text: str) -> set[str]:
    """Names of the variables ``text`` refers to (macros ``$__x(...)`` excluded, built-ins included).

    >>> sorted(references("$__timeFilter(t) AND a IN (${a:singlequote}) AND b = '$b' ${__data.fields.c} [[d]]"))
    ['__data', 'a', 'b', 'd']
    """
    names = set()
    for m in _VARIABLE.finditer(text):
        name = m[1] or m[2] or m[4]
        if name.startswith("__") and name[2:] in MACROS:
            continue
        names.add(name)
    return names


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, including those nested in (collapsed) rows; rows themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from iter_panels(panel)
        else:
            yield panel
