"""The Grafana provisioning under deploy/grafana/, as the tests read and run it.

- Files: data sources, dashboards, alert rules.
- :func:`expand`: the ClickHouse plugin's macros and Grafana's template variables replaced by
  plain SQL, the way the plugin documents them (v4, "Macros"), so a query can run on a
  ClickHouse server without Grafana. Only what siyu's files use is supported; anything else
  left in a query is an error, never passed through.
- :func:`evaluate`: an alert rule's query A run on ClickHouse, then its reduce (B) and
  threshold (C) expressions applied as Grafana's server-side expressions do: which alert
  instances would fire, by their labels.
- Generated data for the alert queries (a drop, steady and low traffic, silence, dead
  letters) and for the dashboards (the domain engine run over a scenario).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from pipeline.contract.deadletter import Source, dead_letter_headers
from pipeline.contract.events import ClickEvent, PurchaseEvent, Reject, RejectReason, ShareEvent
from pipeline.domain import Engine
from pipeline.domain.rows import TOO_LATE_FOR_ATTRIBUTION, CreditRow, LateEventRow
from pipeline.sink.rows import (
    DEAD_LETTERS,
    DOMAIN_TABLES,
    EVENTS,
    dead_letter_row,
    domain_row_batches,
    domain_row_values,
    event_row,
)
from tests.scenario import Scenario

GRAFANA = Path(__file__).resolve().parents[1] / "deploy" / "grafana"
PROVISIONING = GRAFANA / "provisioning"
CLICKHOUSE = "grafana-clickhouse-datasource"
EXPR = "__expr__"

#: Runs SQL, returns (column names, rows).
Runner = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]


# -- Files ------------------------------------------------------------------------------------


def yaml_files(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    """Every provisioning file of ``kind`` (datasources, dashboards, alerting), parsed."""
    paths = sorted((PROVISIONING / kind).glob("*.yaml")) + sorted(
        (PROVISIONING / kind).glob("*.yml")
    )
    return [(p, yaml.safe_load(p.read_text())) for p in paths]


def datasources() -> dict[str, dict[str, Any]]:
    """Provisioned data sources by uid."""
    return {ds["uid"]: ds for _, doc in yaml_files("datasources") for ds in doc["datasources"]}


def dashboard_files() -> list[Path]:
    return sorted((GRAFANA / "dashboards").glob("*.json"))


def dashboards() -> dict[str, dict[str, Any]]:
    """Dashboard JSON by file name."""
    return {p.name: json.loads(p.read_text()) for p in dashboard_files()}


def alert_groups() -> list[dict[str, Any]]:
    return [g for _, doc in yaml_files("alerting") for g in doc.get("groups", [])]


def alert_rules() -> dict[str, dict[str, Any]]:
    """Provisioned alert rules by uid."""
    return {r["uid"]: r for g in alert_groups() for r in g["rules"]}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any], ds_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of data source type ``ds_type``."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource") or {}
            if ds.get("type") == ds_type:
                yield panel.get("title", "?"), target
    for var in dashboard.get("templating", {}).get("list", []):
        ds = var.get("datasource") or {}
        if var.get("type") == "query" and ds.get("type") == ds_type:
            query = var["query"]
            raw = query if isinstance(query, str) else query.get("rawSql") or query.get("query")
            yield f"variable {var['name']}", {"rawSql": raw, "expr": raw}


# -- Macros -----------------------------------------------------------------------------------

_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def sql_string(value: str) -> str:
    """Grafana's ``${var:sqlstring}`` format: quoted, quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def expand(
    sql: str,
    *,
    start: int,
    end: int,
    interval_s: int = 60,
    variables: dict[str, str] | None = None,
) -> str:
    """``sql`` with the ClickHouse plugin's macros for the range [start, end] (Unix seconds)
    and Grafana's variables replaced, as documented by the plugin:

    - ``$__timeFilter(c)`` → ``c >= toDateTime(start) AND c <= toDateTime(end)``
    - ``$__fromTime`` / ``$__toTime`` → ``toDateTime(start)`` / ``toDateTime(end)``
    - ``$__interval_s`` → the interval in seconds
    - ``${name:sqlstring}`` → the variable's value quoted as an SQL string; ``$name`` and
      ``${name}`` → the raw value.

    Other macros (``$__timeInterval`` and ``$__timeGroup`` expand to toStartOfInterval, which
    18.16 lacks; the ``_ms`` forms need DateTime64) raise ValueError, as does any ``$`` left.
    """

    def macro(m: re.Match[str]) -> str:
        name, arg = m.group(1), m.group(2)
        if name == "timeFilter" and arg:
            col = arg.strip()
            return f"{col} >= toDateTime({start}) AND {col} <= toDateTime({end})"
        if name == "fromTime" and arg is None:
            return f"toDateTime({start})"
        if name == "toTime" and arg is None:
            return f"toDateTime({end})"
        if name == "interval_s" and arg is None:
            return str(interval_s)
        raise ValueError(f"macro $__{name} is not supported here: {m.group(0)}")

    out = _MACRO.sub(macro, sql)
    values = variables or {}

    def variable(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name not in values:
            raise ValueError(f"unknown variable {m.group(0)}")
        fmt = m.group(2)
        if fmt == "sqlstring":
            return sql_string(values[name])
        if fmt is not None:
            raise ValueError(f"variable format {fmt} is not supported: {m.group(0)}")
        return values[name]

    out = _VARIABLE.sub(variable, out)
    if "$" in out:
        raise ValueError(f"unexpanded $ in query: {out}")
    return out


# -- Alert evaluation -------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One row of an alert query: its labels and value."""

    labels: tuple[tuple[str, str], ...]
    value: float | None

    def label(self, name: str) -> str:
        return dict(self.labels)[name]


def numbers(names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[Instance]:
    """A table result as Grafana reads numeric data: string columns are labels, the one
    numeric column is the value (a second numeric column is an error, as in Grafana)."""
    out = []
    for row in rows:
        labels, value, numeric = [], None, 0
        for name, cell in zip(names, row, strict=True):
            if isinstance(cell, str):
                labels.append((name, cell))
            elif cell is None or isinstance(cell, int | float | Decimal):
                numeric += 1
                value = None if cell is None else float(cell)
            else:
                raise TypeError(f"column {name}: {cell!r} is neither a label nor a number")
        if numeric != 1:
            raise ValueError(f"an alert row needs exactly one numeric column: {names}")
        out.append(Instance(tuple(sorted(labels)), value))
    keys = [i.labels for i in out]
    if len(keys) != len(set(keys)):
        raise ValueError(f"two rows with the same labels: {keys}")
    return out


def _reduce(model: dict[str, Any], inputs: list[Instance]) -> list[Instance]:
    if model.get("reducer") != "last":
        raise ValueError(f"reducer {model.get('reducer')} is not supported here")
    # A number (one value per label set) reduces to itself; dropNN drops NaN and null.
    mode = (model.get("settings") or {}).get("mode")
    if mode == "dropNN":
        return [i for i in inputs if i.value is not None and not math.isnan(i.value)]
    return inputs


def _threshold(model: dict[str, Any], inputs: list[Instance]) -> list[Instance]:
    (condition,) = model["conditions"]
    evaluator = condition["evaluator"]
    kind, params = evaluator["type"], evaluator["params"]
    tests: dict[str, Callable[[float], bool]] = {
        "gt": lambda v: v > params[0],
        "lt": lambda v: v < params[0],
        "within_range": lambda v: params[0] < v < params[1],
        "outside_range": lambda v: v < params[0] or v > params[1],
    }
    test = tests[kind]
    return [Instance(i.labels, float(i.value is not None and test(i.value))) for i in inputs]


def evaluate(rule: dict[str, Any], run: Runner, now: int) -> dict[str, Any]:
    """Every refId's result of ``rule`` at ``now``; ``"firing"`` holds the label sets whose
    condition is 1, ``"A"`` the query's instances. ClickHouse queries only."""
    results: dict[str, list[Instance]] = {}
    for query in rule["data"]:
        model = query["model"]
        if query["datasourceUid"] == EXPR:
            source = results[model["expression"]]
            if model["type"] == "reduce":
                results[query["refId"]] = _reduce(model, source)
            elif model["type"] == "threshold":
                results[query["refId"]] = _threshold(model, source)
            else:
                raise ValueError(f"expression type {model['type']} is not supported here")
        else:
            span = query["relativeTimeRange"]
            sql = expand(model["rawSql"], start=now - span["from"], end=now - span["to"])
            results[query["refId"]] = numbers(*run(sql))
    firing = {i.labels for i in results[rule["condition"]] if i.value == 1.0}
    return {"firing": firing, **results}


def brand(name: str) -> tuple[tuple[str, str], ...]:
    """The label set of an alert instance for brand ``name``."""
    return (("brand_id", name),)


# -- Generated data ---------------------------------------------------------------------------

#: "Now" of the alert scenarios: a Friday noon, UTC.
NOW = int(dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC).timestamp())
HOUR, DAY = 3600, 86400


@dataclass
class Tables:
    """Rows for ClickHouse tables: table name -> (columns, rows)."""

    rows: dict[str, tuple[tuple[str, ...], list[list[Any]]]] = field(default_factory=dict)
    #: Rows written again later, as a replay does (inserted by a second INSERT).
    replays: dict[str, tuple[tuple[str, ...], list[list[Any]]]] = field(default_factory=dict)
    _offset: int = 0

    def add(self, table: str, columns: Sequence[str], rows: list[list[Any]]) -> None:
        cols, existing = self.rows.setdefault(table, (tuple(columns), []))
        assert cols == tuple(columns)
        existing.extend(rows)

    def event(self, event: Any, ingested_at: int | None = None, replays: int = 0) -> None:
        """An accepted event, ingested when it occurred unless told otherwise, and written
        ``replays`` more times by later inserts (FINAL must count it once)."""
        self._offset += 1
        at = int(event.occurred_at.timestamp()) if ingested_at is None else ingested_at
        self.add(EVENTS.name, EVENTS.columns, [event_row(event, 0, self._offset, at)])
        for _ in range(replays):
            _, rows = self.replays.setdefault(EVENTS.name, (EVENTS.columns, []))
            rows.append(event_row(event, 0, self._offset, at))

    def dead_letter(self, brand_id: str, at: int, reason: RejectReason) -> None:
        """A dead letter of ``brand_id`` ('' when unreadable) rejected at ``at``."""
        self._offset += 1
        payload = b"{not json" if not brand_id else json.dumps({"brand_id": brand_id}).encode()
        reject = Reject(reason, "generated", payload, None)
        source = Source("siyu.events", 0, self._offset, at * 1000)
        row = dead_letter_row(payload, dead_letter_headers(reject, source), at)
        self.add(DEAD_LETTERS.name, DEAD_LETTERS.columns, [row])

    def insert(self, client: Any, database: str) -> None:
        for tables in (self.rows, self.replays):
            for table, (columns, rows) in tables.items():
                sql = f"INSERT INTO {database}.{table} ({', '.join(columns)}) VALUES"
                client.execute(sql, rows)


def _at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def _common(brand_id: str, eid: str, user: str, at: int, channel: str) -> dict[str, Any]:
    return {
        "event_id": eid,
        "schema_version": 1,
        "brand_id": brand_id,
        "user_id": user,
        "occurred_at": _at(at),
        "channel": channel,
    }


class Traffic:
    """Clicks and purchases of brands in time windows, spread evenly over each window."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.n = 0

    def window(
        self,
        brand_id: str,
        start: int,
        length: int,
        clicks: int,
        purchases: int,
        *,
        kol_id: str | None = None,
        replays: int = 0,
    ) -> None:
        """``clicks`` clicks and ``purchases`` purchases in [start, start + length), the
        clicks written ``replays`` more times."""
        total = clicks + purchases
        for i in range(total):
            self.n += 1
            at = start + (i * length) // max(total, 1)
            common = _common(brand_id, f"{brand_id}-e{self.n}", f"u{self.n % 97}", at, "app")
            if i < clicks:
                event: Any = ClickEvent(type="click", kol_id=kol_id, **common)
                self.tables.event(event, replays=replays)
            else:
                event = PurchaseEvent(
                    type="purchase",
                    order_id=f"o{self.n}",
                    amount=Decimal("99.00"),
                    currency="CNY",
                    **common,
                )
                self.tables.event(event)


def conversion_tables() -> Tables:
    """Brands for the conversion-drop alert. Baseline = the last hour of each of the 7 days
    before NOW; every brand also converts at 100% twelve hours off that hour, which a query
    that ignored the time of day would take into its baseline."""
    tables = Tables()
    traffic = Traffic(tables)

    def brand_days(name: str, clicks: int, purchases: int) -> None:
        for k in range(1, 8):
            traffic.window(name, NOW - k * DAY - HOUR, HOUR, clicks, purchases)
            traffic.window(name, NOW - k * DAY - 13 * HOUR, HOUR, 400, 400)

    brand_days("drop", 400, 20)  # 5%, then 1% now: fires
    traffic.window("drop", NOW - HOUR, HOUR, 400, 4)
    brand_days("steady", 400, 20)  # 5% now too, its clicks replayed twice (FINAL: once)
    traffic.window("steady", NOW - HOUR, HOUR, 400, 20, replays=2)
    # 150 clicks an hour at 10%: 15 purchases expected now, 1 came, but under 200 clicks.
    brand_days("low", 150, 15)
    traffic.window("low", NOW - HOUR, HOUR, 150, 1)
    brand_days("rare", 400, 1)  # 1 purchase expected an hour: losing it is chance
    traffic.window("rare", NOW - HOUR, HOUR, 400, 0)
    brand_days("nobase", 400, 0)  # never bought in the baseline: no rate to compare with
    traffic.window("nobase", NOW - HOUR, HOUR, 400, 0)
    brand_days("silent", 400, 20)  # nothing now: no rate at all (the silence alert's job)
    return tables


def _credit(brand_id: str, kol_id: str, purchase_id: str, at: int, revision: int, sign: int) -> Any:
    return CreditRow(
        brand_id=brand_id,
        purchase_event_id=purchase_id,
        order_id=f"o-{purchase_id}",
        buyer_id="u1",
        purchased_at_us=at * 1_000_000,
        amount=Decimal("99.00"),
        currency="CNY",
        kind="kol",
        sharer_id=None,
        kol_id=kol_id,
        share_id=None,
        share_depth=None,
        root_share_id=None,
        touch_event_id=None,
        touched_at_us=None,
        revision=revision,
        sign=sign,
    )


def kol_tables() -> Tables:
    """KOLs of brand "k": 10% of clicks converted over the 7 days before the last 6 hours."""
    tables = Tables()
    traffic = Traffic(tables)
    credits: list[Any] = []

    def kol(name: str, cur_clicks: int, cur_orders: int, retracted: int = 0) -> None:
        for day in range(7):
            start = NOW - 6 * HOUR - (day + 1) * DAY
            traffic.window("k", start, DAY, 300, 0, kol_id=name)
            credits.extend(
                _credit("k", name, f"{name}-b{day}-{i}", start + i * 600, 1, 1) for i in range(30)
            )
        traffic.window("k", NOW - 6 * HOUR, 6 * HOUR, cur_clicks, 0, kol_id=name)
        for i in range(cur_orders + retracted):
            at = NOW - 5 * HOUR + i * 60
            credits.append(_credit("k", name, f"{name}-c{i}", at, 1, 1))
            if i >= cur_orders:  # credited, then withdrawn: counts as nothing
                credits.append(_credit("k", name, f"{name}-c{i}", at, 1, -1))

    kol("kol-stop", 400, 2, retracted=10)  # 40 expected, 2 (net): fires
    kol("kol-ok", 400, 40)
    kol("kol-small", 100, 0)  # under 300 clicks in the 6 hours
    tables.add(
        "purchase_credits",
        DOMAIN_TABLES["purchase_credits"].columns,
        [domain_row_values(c) for c in credits],
    )
    return tables


def silence_tables() -> Tables:
    """Brands for the no-events alert, by ingestion time."""
    tables = Tables()
    n = 0

    def share(brand_id: str, at: int) -> None:
        nonlocal n
        n += 1
        common = _common(brand_id, f"{brand_id}-s{n}", "u1", at, "app")
        tables.event(ShareEvent(type="share", share_id=f"s{n}", **common), ingested_at=at)

    for i in range(7 * 24 * 20):  # 20 an hour for 7 days
        at = NOW - 7 * DAY + i * 180
        if at <= NOW - 2 * HOUR:
            share("gone", at)  # stopped 2 hours ago: fires
        if at < NOW - 60:
            share("live", at + 120)
    for i in range(7 * 24 * 2):  # 2 an hour, stopped 5 hours ago: too quiet to tell
        at = NOW - 7 * DAY + i * 1800
        if at < NOW - 5 * HOUR:
            share("quiet", at)
    return tables


def dead_letter_tables() -> Tables:
    """Dead letters and accepted events of the last 10 minutes (and older ones)."""
    tables = Tables()
    n = 0

    def events(brand_id: str, count: int, since: int) -> None:
        nonlocal n
        for i in range(count):
            n += 1
            at = since + (i * 540) // count
            common = _common(brand_id, f"{brand_id}-d{n}", "u1", at, "app")
            tables.event(ShareEvent(type="share", share_id=f"d{n}", **common), ingested_at=at)

    def letters(brand_id: str, count: int, since: int) -> None:
        for i in range(count):
            tables.dead_letter(brand_id, since + (i * 540) // count, RejectReason.SCHEMA_VIOLATION)

    events("broken", 400, NOW - 540)  # 60 of 460 rejected: fires
    letters("broken", 60, NOW - 540)
    events("busy", 2000, NOW - 540)  # 25 of 2025: above the floor of 20, under 5%
    letters("busy", 25, NOW - 540)
    events("fine", 1000, NOW - 540)  # 3: under the floor
    letters("fine", 3, NOW - 540)
    letters("", 30, NOW - 540)  # unreadable input: no brand, nothing accepted: fires
    letters("old", 100, NOW - 1800)  # outside the 10 minutes
    events("old", 10, NOW - 540)
    return tables


def scenario_tables(scenario: Scenario) -> Tables:
    """What the pipeline would write for ``scenario``: its events, the domain engine's rows,
    and dead letters of every brand."""
    tables = Tables()
    for event in scenario.arrival:
        tables.event(event)
    engine = Engine()
    engine.feed(scenario.arrival, batch_size=50)
    engine.finish()
    for batch in domain_row_batches(engine.rows):
        tables.add(batch.table, batch.columns, batch.rows)
    last = int(scenario.events[-1].occurred_at.timestamp())
    late = []
    for i, brand_id in enumerate(sorted({e.brand_id for e in scenario.events} | {""})):
        tables.dead_letter(brand_id, last - i * 60, RejectReason.SCHEMA_VIOLATION)
        if brand_id:
            late.append(
                LateEventRow(
                    brand_id=brand_id,
                    processor="user",
                    subject_id="u1",
                    event_id=f"late-{i}",
                    event_type="click",
                    occurred_at_us=(last - 3 * DAY) * 1_000_000,
                    watermark_us=last * 1_000_000,
                    reason=TOO_LATE_FOR_ATTRIBUTION,
                )
            )
    for batch in domain_row_batches(late):
        tables.add(batch.table, batch.columns, batch.rows)
    return tables


# -- What the alert queries must say on that data ------------------------------------------


@dataclass(frozen=True)
class AlertCase:
    """An alert rule, the data to run it on, the instances its query must return (after the
    guards) and those that must fire."""

    uid: str
    tables: Callable[[], Tables]
    returned: frozenset[tuple[tuple[str, str], ...]]
    firing: frozenset[tuple[tuple[str, str], ...]]


def _kol(name: str) -> tuple[tuple[str, str], ...]:
    return (("brand_id", "k"), ("kol_id", name))


ALERT_CASES = [
    AlertCase(
        "siyu-conversion-drop",
        conversion_tables,
        frozenset({brand("drop"), brand("steady")}),
        frozenset({brand("drop")}),
    ),
    AlertCase(
        "siyu-kol-stopped-converting",
        kol_tables,
        frozenset({_kol("kol-stop"), _kol("kol-ok")}),
        frozenset({_kol("kol-stop")}),
    ),
    AlertCase(
        "siyu-brand-silent",
        silence_tables,
        frozenset({brand("gone"), brand("live")}),
        frozenset({brand("gone")}),
    ),
    AlertCase(
        "siyu-dead-letters-spiking",
        dead_letter_tables,
        frozenset({brand("broken"), brand("busy"), brand("")}),
        frozenset({brand("broken"), brand("")}),
    ),
]

#: Values the queries must compute on that data (label set -> value), to a tolerance.
EXPECTED_VALUES = {
    "siyu-conversion-drop": {brand("drop"): 0.2, brand("steady"): 1.0},
    "siyu-kol-stopped-converting": {_kol("kol-stop"): 0.05, _kol("kol-ok"): 1.0},
    "siyu-brand-silent": {brand("gone"): 7200.0},
    "siyu-dead-letters-spiking": {brand("broken"): 60 / 460, brand(""): 1.0},
}


def check_alert_case(case: AlertCase, run: Runner) -> None:
    """Run the provisioned rule on ``case``'s data (already inserted) and check it."""
    result = evaluate(alert_rules()[case.uid], run, NOW)
    returned = {i.labels: i.value for i in result["A"]}
    assert set(returned) == case.returned, case.uid
    assert result["firing"] == case.firing, case.uid
    for labels, expected in EXPECTED_VALUES[case.uid].items():
        value = returned[labels]
        assert value is not None and math.isclose(value, expected, rel_tol=0.02), (
            case.uid,
            labels,
            value,
        )


#: The dashboards' range and variables for :func:`scenario_tables` data.
DASHBOARD_VARIABLES = {"brand": "acme"}


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, raw SQL) of every ClickHouse query of every dashboard."""
    return [
        (name, title, target["rawSql"])
        for name, dashboard in dashboards().items()
        for title, target in targets(dashboard, CLICKHOUSE)
    ]
