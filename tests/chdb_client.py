"""A clickhouse-driver-shaped client over chdb (current ClickHouse, in-process), for tests.

Queries keep clickhouse-driver's ``%(name)s`` parameters; they are escaped by the driver's
own client-side substitution, exactly as they are before being sent to a real server.
Row inserts (``INSERT ... VALUES`` with a row list) are sent as JSONEachRow data.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import orjson
from chdb import session
from clickhouse_driver import Client

_INSERT = re.compile(r"^\s*INSERT INTO\s+(\S+)\s*\(([^)]*)\)\s*VALUES\s*$", re.I | re.S)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    raise TypeError(type(value))


class ChdbClient:
    """Just enough of clickhouse_driver.Client for migrations, sinks' SQL and cookbook tests."""

    def __init__(self) -> None:
        self._session = session.Session()
        self._escaper = Client(host="unused")  # only its parameter substitution is used

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        m = _INSERT.match(query)
        if m and isinstance(params, list):
            cols = [c.strip() for c in m.group(2).split(",")]
            lines = b"\n".join(
                orjson.dumps(dict(zip(cols, row, strict=True)), default=_json_default)
                for row in params
            )
            self._session.query(
                f"INSERT INTO {m.group(1)} ({', '.join(cols)}) FORMAT JSONEachRow\n"
                + lines.decode()
            )
            return []
        if params:
            query = self._escaper.substitute_params(query, params, self._escaper.connection.context)
        result = self._session.query(query, "JSONCompact")
        raw = result.bytes() if hasattr(result, "bytes") else bytes(result)
        if not raw.strip():
            return []
        return [tuple(r) for r in orjson.loads(raw)["data"]]

    def disconnect(self) -> None:
        self._session.close()
