"""Inserting row batches into ClickHouse: retries with backoff, isolation of poison rows.

An insert either succeeds or keeps being retried: the sink never acknowledges rows that
ClickHouse has not accepted. Two kinds of failure are told apart:

* the server is unreachable or busy (network errors, too many parts, memory, timeouts):
  wait with capped exponential backoff and try again, for as long as it takes;
* ClickHouse refuses the data itself (a value it cannot store): the batch is split in
  halves until the refused rows are found; they go to ``dead_letters`` with reason
  ``sink_rejected`` and the rest is inserted. One bad row never blocks the others. A value
  the client cannot even encode (a string in an integer column, say) counts as refused too,
  and its letter's ``detail`` names the column, its type and the value it got.

A refused row's dead letter is keyed by a hash of the row (as ``source_offset``): the
row's own Kafka offset does not survive the sink's batching, and ``dead_letters`` keeps one
row per key, so distinct refused rows stay distinct and a replayed one replaces itself. Its
``source_timestamp`` is the Kafka timestamp of the row batch the row came in, which a
replay reads again: ``dead_letters`` is partitioned by month of that column, so the time of
the refusal would put a replay's letter in another partition, beside the first one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from pipeline import metrics
from pipeline.contract.deadletter import (
    H_BRAND,
    H_DETAIL,
    H_OFFSET,
    H_REASON,
    H_TIMESTAMP,
    H_TOPIC,
)
from pipeline.sink.clickhouse import check_identifier, client_from_url
from pipeline.sink.rows import DEAD_LETTERS, Values, dead_letter_row

log = logging.getLogger(__name__)

#: Server error codes that mean "this data cannot be stored", not "try later".
DATA_ERROR_CODES = frozenset(
    {
        6,
        27,
        38,
        41,
        53,
        69,
        70,
        72,
        131,
        190,
        321,
        407,  # parse/convert/type/overflow/size
    }
)
#: What clickhouse-driver raises while encoding a value of the wrong type or out of range, by
#: column type: Int (TypeMismatchError), Decimal (decimal.InvalidOperation, an
#: ArithmeticError), String ('int' object has no attribute 'encode'), DateTime ('str' object
#: has no attribute 'tzinfo'). None of them is the server's answer, and retrying cannot help.
_CLIENT_DATA_ERRORS = (
    ch_errors.TypeMismatchError,
    TypeError,
    ValueError,
    ArithmeticError,
    AttributeError,
    struct.error,
    UnicodeError,
)


class ClickHouseWriter:
    """Inserts rows into ``database`` tables; one connection, used from one worker thread."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retry_max_seconds: float = 30.0,
        on_retry: Callable[[str, BaseException, float], None] | None = None,
        client_settings: Mapping[str, Any] | None = None,
    ) -> None:
        """``client_settings`` are ClickHouse settings of every insert (cluster mode: see
        pipeline.sink.cluster.insert_settings)."""
        self._url = url
        self._db = check_identifier(database)
        self._retry_max = retry_max_seconds
        self._client: Client | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siyu-ch")
        self._on_retry = on_retry
        self._client_settings = dict(client_settings or {})
        self.failures = 0

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
        self._pool.shutdown(wait=False)

    def _insert_sync(self, table: str, columns: Sequence[str], rows: list[Values]) -> None:
        if self._client is None:
            self._client = client_from_url(self._url, database=self._db, **self._client_settings)
        cols = ", ".join(check_identifier(c) for c in columns)
        try:
            self._client.execute(
                f"INSERT INTO {self._db}.{check_identifier(table)} ({cols}) VALUES", rows
            )
        except BaseException:
            # A failed insert can leave the connection mid-protocol: start afresh next time.
            self._client.disconnect()
            self._client = None
            raise

    async def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: list[Values],
        stopping: Callable[[], bool] = lambda: False,
        source_ms: Sequence[int] = (),
    ) -> int:
        """Insert ``rows``; returns how many went to ``dead_letters`` as refused by ClickHouse.

        ``source_ms`` gives, row by row, the Kafka timestamp (ms) of the message each row came
        in: a refused row's letter carries it. Without it, the letter has the time of refusal.
        Retries transient failures until they succeed or ``stopping()`` is true, in which case
        :class:`asyncio.CancelledError` is raised and nothing may be acknowledged.
        """
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await loop.run_in_executor(self._pool, self._insert_sync, table, columns, rows)
                metrics.record_insert(table, time.monotonic() - started)
                return 0
            except _CLIENT_DATA_ERRORS as err:
                metrics.record_insert_failure(table, "refused")
                return await self._isolate(table, columns, rows, source_ms, err, stopping)
            except ch_errors.ServerException as err:
                if err.code in DATA_ERROR_CODES:
                    metrics.record_insert_failure(table, "refused")
                    return await self._isolate(table, columns, rows, source_ms, err, stopping)
                reason: BaseException = err
            except (ch_errors.Error, OSError, EOFError) as err:
                reason = err
            metrics.record_insert_failure(table, "unavailable")
            attempt += 1
            self.failures += 1
            delay = min(self._retry_max, 0.25 * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2)
            if self._on_retry is not None:
                self._on_retry(table, reason, delay)
            log.warning(
                "ClickHouse insert into %s (%d rows) failed, attempt %d: %s; retrying in %.1fs",
                table,
                len(rows),
                attempt,
                _one_line(reason),
                delay,
            )
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if stopping():
                    raise asyncio.CancelledError("stopping while ClickHouse is unavailable")
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    async def _isolate(
        self,
        table: str,
        columns: Sequence[str],
        rows: list[Values],
        source_ms: Sequence[int],
        err: BaseException,
        stopping: Callable[[], bool],
    ) -> int:
        if len(rows) == 1:
            if table == DEAD_LETTERS.name:
                log.error("ClickHouse refused a dead-letter row, keeping it in the log: %r", rows)
                raise RuntimeError(f"dead_letters row refused by ClickHouse: {_one_line(err)}")
            record = dict(zip(columns, rows[0], strict=True))
            payload = orjson.dumps(record, default=str)
            brand = str(record.get("brand_id", ""))
            headers = [
                (H_REASON, b"sink_rejected"),
                (H_DETAIL, _refusal_detail(err, record)[:2000].encode()),
                (H_TOPIC, f"siyu-sink:{table}".encode()),
                (
                    H_OFFSET,
                    b"%d" % int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest()),
                ),
                (H_BRAND, brand.encode()),
            ]
            if source_ms and source_ms[0] > 0:
                headers.append((H_TIMESTAMP, b"%d" % source_ms[0]))
            letter = dead_letter_row(payload, headers, int(time.time()))
            log.error("ClickHouse refused a row of %s, dead-lettered: %s", table, _one_line(err))
            await self.insert(DEAD_LETTERS.name, DEAD_LETTERS.columns, [letter], stopping)
            metrics.dead_letter("sink_rejected", brand)
            return 1
        mid = len(rows) // 2
        return await self.insert(
            table, columns, rows[:mid], stopping, source_ms[:mid]
        ) + await self.insert(table, columns, rows[mid:], stopping, source_ms[mid:])


def _refusal_detail(err: BaseException, record: Mapping[str, Any]) -> str:
    """Why a row was refused: the column the client could not encode, when it says, and the
    error."""
    culprit = _column_being_encoded(err)
    if culprit is None or culprit[0] not in record:
        return _one_line(err)
    name, spec = culprit
    value = record[name]
    return f"column {name} ({spec}) got {type(value).__name__} {value!r:.200}: {_one_line(err)}"


def _column_being_encoded(err: BaseException) -> tuple[str, str] | None:
    """(column, ClickHouse type) that clickhouse-driver was encoding when ``err`` rose on the
    client, read from its ``write_column`` frame: its own messages for a bad Decimal or a
    number in a String column do not name the column. None when the traceback has no such
    frame (a server refusal, or a driver that encodes differently)."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "write_column":
            name, spec = frame.f_locals.get("column_name"), frame.f_locals.get("column_spec")
            if isinstance(name, str) and isinstance(spec, str):
                found = (name, spec)
        tb = tb.tb_next
    return found


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
