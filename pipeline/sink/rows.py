"""Values batches: what agents publish for the sink, and the rows of each sink table.

A :class:`RowBatch` is one Kafka message on the rows topic: a table name, its column names
and many rows of JSON-native values (DateTime as integer POSIX seconds, Decimal as a
string), so one message carries a whole batch and the sink pays per-message costs once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

import orjson

from pipeline.contract.deadletter import (
    H_BRAND,
    H_DETAIL,
    H_INDEX,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TIMESTAMP,
    H_TOPIC,
)
from pipeline.contract.envelopes import MAX_MESSAGE_BYTES, json_array_chunks
from pipeline.contract.events import AnyEvent
from pipeline.domain.rows import ROW_TYPES as DOMAIN_ROW_TYPES
from pipeline.domain.rows import Row as DomainRow
from pipeline.domain.rows import coalesce_snapshots

#: One row as the ClickHouse client sends it: a table's column values, in column order.
Values = list[Any]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A sink table: its name and the columns agents fill, in order."""

    name: str
    columns: tuple[str, ...]


EVENTS = TableSpec(
    "events",
    (
        "brand_id",
        "event_id",
        "type",
        "schema_version",
        "user_id",
        "occurred_at",
        "channel",
        "kol_id",
        "campaign_id",
        "share_id",
        "parent_share_id",
        "target_id",
        "order_id",
        "amount",
        "currency",
        "properties",
        "received_at",
        "ingested_at",
        "kafka_partition",
        "kafka_offset",
    ),
)

DEAD_LETTERS = TableSpec(
    "dead_letters",
    (
        "source_topic",
        "source_partition",
        "source_offset",
        "element_index",
        "source_timestamp",
        "brand_id",
        "reason",
        "detail",
        "payload",
        "dead_lettered_at",
    ),
)


def dead_letter_row(
    payload: bytes, headers: Sequence[tuple[str, bytes | None]], now: int
) -> Values:
    """The ``dead_letters`` row of a dead-letter message (columns of :data:`DEAD_LETTERS`).

    Missing headers (a message somebody else put on the topic) give empty values rather than
    losing the message. So do headers without a value, and numbers out of their column's
    range are clamped to it: ClickHouse must take every dead-letters row, since a refused one
    has no further place to go and would stop the sink.
    """
    h = {k: (v or b"").decode("utf-8", "replace") for k, v in headers}
    ts_ms = _int(h.get(H_TIMESTAMP), now * 1000, 0, _UINT32 * 1000)
    return [
        h.get(H_TOPIC, ""),
        _int(h.get(H_PARTITION), 0, 0, _UINT32),
        _int(h.get(H_OFFSET), 0, 0, 2**64 - 1),
        _int(h.get(H_INDEX), -1, -(2**31), 2**31 - 1),
        ts_ms // 1000,
        h.get(H_BRAND, ""),
        h.get(H_REASON, "unknown"),
        h.get(H_DETAIL, ""),
        payload,
        now,
    ]


#: The largest UInt32 (and DateTime, in seconds).
_UINT32 = 2**32 - 1


def _int(text: str | None, default: int, lo: int, hi: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        value = default
    return min(max(value, lo), hi)


#: Every table the sink may write; a batch naming another table is refused.
SINK_TABLES: dict[str, TableSpec] = {t.name: t for t in (EVENTS, DEAD_LETTERS)}


@dataclass(frozen=True, slots=True)
class RowBatch:
    """Rows for one table."""

    table: str
    columns: Sequence[str]
    rows: list[Values]

    def encode_chunks(self, max_rows: int, max_bytes: int = MAX_MESSAGE_BYTES) -> list[bytes]:
        """This batch as rows-topic messages of at most ``max_rows`` rows and about
        ``max_bytes`` bytes each."""
        head = orjson.dumps({"table": self.table, "columns": list(self.columns)})[:-1]
        return json_array_chunks(
            head + b',"rows":[', (orjson.dumps(r) for r in self.rows), b"]}", max_rows, max_bytes
        )

    @classmethod
    def decode(cls, raw: bytes) -> RowBatch:
        """Parse a rows-topic message; raises ValueError when it is not a valid batch."""
        obj = orjson.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError("row batch is not a JSON object")
        table, columns, rows = obj.get("table"), obj.get("columns"), obj.get("rows")
        spec = SINK_TABLES.get(table) if isinstance(table, str) else None
        if spec is None:
            raise ValueError(f"unknown sink table {table!r}")
        # Each named once, each a column of the table: an insert naming a column twice, or
        # none, is a query error that no retry cures, and would hold the sink on this message.
        if (
            not isinstance(columns, list)
            or not columns
            or not all(isinstance(c, str) for c in columns)
            or len(set(columns)) != len(columns)
            or not set(columns) <= set(spec.columns)
        ):
            raise ValueError(
                f"columns {repr(columns)[:300]} are not distinct columns of {spec.name}"
            )
        if not isinstance(rows, list) or any(
            not isinstance(r, list) or len(r) != len(columns) for r in rows
        ):
            raise ValueError("rows must be lists as long as the column list")
        return cls(spec.name, tuple(columns), rows)


def _ts(value: Any) -> int:
    return int(value.timestamp()) if value is not None else 0


def event_row(event: AnyEvent, partition: int, offset: int, ingested_at: int) -> Values:
    """The ``events`` row of an accepted event (columns of :data:`EVENTS`).

    Any event type: a column takes the event's field of the same name, and a type without
    that field gives the column's empty value (``''``, amount ``'0'``), as does an absent
    optional field. ``ingested_at`` is wall time in POSIX seconds.
    """
    get = event.__dict__.get  # a model's fields; no getattr per column on the hot path
    amount = get("amount")
    properties = event.properties
    return [
        event.brand_id,
        event.event_id,
        event.type,
        event.schema_version,
        event.user_id,
        _ts(event.occurred_at),
        event.channel,
        event.kol_id or "",
        event.campaign_id or "",
        get("share_id") or "",
        get("parent_share_id") or "",
        get("target_id") or "",
        get("order_id") or "",
        "0" if amount is None else str(amount),
        get("currency") or "",
        orjson.dumps(properties).decode() if properties else "",
        _ts(event.received_at),
        ingested_at,
        partition,
        offset,
    ]


# --- Rows of the domain core (pipeline.domain.rows) ------------------------------------------


def column_name(field_name: str) -> str:
    """ClickHouse column of a domain row field: ``*_us`` microseconds become ``*_at`` DateTime.

    ``first_seen_us`` -> ``first_seen_at``, ``purchased_at_us`` -> ``purchased_at``.
    """
    if not field_name.endswith("_us"):
        return field_name
    base = field_name[:-3]
    return base if base.endswith("_at") else f"{base}_at"


def _domain_spec(row_type: type[Any]) -> TableSpec:
    return TableSpec(row_type.table, tuple(column_name(f.name) for f in fields(row_type)))


def _value(value: Any) -> Any:
    """A domain row's value as ClickHouse takes it (Decimal as text, bool as 0/1)."""
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    if kind is bool:
        return int(value)
    if kind is Decimal:
        return str(value)
    if kind is tuple or kind is list:
        return [str(v) if type(v) is Decimal else v for v in value]
    return value


def _time(value: Any) -> Any:
    """A ``*_us`` field (or a list of them) as whole seconds for a DateTime column."""
    if value is None:
        return None
    if type(value) is tuple or type(value) is list:
        return [_seconds(v) for v in value]
    return _seconds(value)


def _seconds(us: int) -> int:
    # DateTime holds 1970..2106; sentinels such as "no watermark yet" are clamped to it.
    return min(max(int(us) // 1_000_000, 0), 2**32 - 1)


DOMAIN_TABLES: dict[str, TableSpec] = {t.table: _domain_spec(t) for t in DOMAIN_ROW_TYPES}
SINK_TABLES.update(DOMAIN_TABLES)


def domain_row_values(row: DomainRow) -> Values:
    """A domain row as ClickHouse values, in :data:`DOMAIN_TABLES` column order.

    Event times lose their sub-second part (DateTime is whole seconds on 18.16).
    """
    converters = _ROW_CONVERTERS.get(type(row))
    if converters is None:  # per class, not per row: this is on every batch's hot path
        converters = _ROW_CONVERTERS[type(row)] = tuple(
            (f.name, _time if f.name.endswith("_us") else _value) for f in fields(row)
        )
    return [convert(getattr(row, name)) for name, convert in converters]


_ROW_CONVERTERS: dict[type, tuple[tuple[str, Callable[[Any], Any]], ...]] = {}


def domain_row_batches(rows: Iterable[DomainRow]) -> list[RowBatch]:
    """One row batch per table for the sink; snapshots superseded within ``rows`` are dropped
    first. Split them into messages with :meth:`RowBatch.encode_chunks`."""
    by_table: dict[str, list[Values]] = {}
    for row in coalesce_snapshots(rows):
        by_table.setdefault(row.table, []).append(domain_row_values(row))
    return [
        RowBatch(table, DOMAIN_TABLES[table].columns, values) for table, values in by_table.items()
    ]
