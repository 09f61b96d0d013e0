"""Read the domain tables back from ClickHouse as domain rows, to compare with the oracle."""

from __future__ import annotations

import datetime as dt
import typing
from dataclasses import fields
from decimal import Decimal
from typing import Any

from pipeline.domain import Engine
from pipeline.domain.rows import ROW_TYPES, Row
from pipeline.sink.clickhouse import client_from_url
from pipeline.sink.rows import DOMAIN_TABLES


def _us(value: Any) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp()) * 1_000_000


def _field_value(name: str, hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if name.endswith("_us"):
        return tuple(_us(v) for v in value) if isinstance(value, list | tuple) else _us(value)
    if isinstance(value, list | tuple):
        return tuple(value)
    if hint is bool:
        return bool(value)
    if isinstance(value, Decimal):
        return value
    return value


def read_domain_rows(clickhouse_url: str) -> list[Row]:
    """Every domain row in ClickHouse (FINAL), rebuilt as :mod:`pipeline.domain.rows`."""
    client = client_from_url(clickhouse_url)
    rows: list[Row] = []
    try:
        for row_type in ROW_TYPES:
            spec = DOMAIN_TABLES[row_type.table]
            hints = typing.get_type_hints(row_type)
            names = [f.name for f in fields(row_type)]
            for values in client.execute(
                f"SELECT {', '.join(spec.columns)} FROM {spec.name} FINAL"
            ):
                kwargs = {
                    n: _field_value(n, hints[n], v) for n, v in zip(names, values, strict=True)
                }
                rows.append(row_type(**kwargs))
    finally:
        client.disconnect()
    return rows


def engine_of(rows: list[Row]) -> Engine:
    """An Engine holding ``rows``, so its read-side views (loyalty(), net_credits(), ...)
    show what ClickHouse holds."""
    engine = Engine()
    engine.rows = rows
    return engine
