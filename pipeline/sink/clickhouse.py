"""Connecting to ClickHouse: one place for URLs, server versions and friendly errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from pipeline.errors import ConfigError, ServiceUnavailable

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier; identifiers cannot be parameters."""
    if not _IDENT.match(name):
        raise ConfigError(f"{name!r} is not a valid ClickHouse identifier (letters, digits, _)")
    return name


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """A ClickHouse server version, comparable as a tuple."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> ServerVersion:
        nums = [int(p) for p in re.findall(r"\d+", text)[:3]]
        nums += [0] * (3 - len(nums))
        return cls(nums[0], nums[1], nums[2])

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def client_from_url(url: str, *, database: str | None = None, **settings: Any) -> Client:
    """A clickhouse-driver client for ``clickhouse://user:password@host:port/database``.

    ``database`` overrides the URL's (use ``"default"`` before the database exists). A cluster's
    other nodes may follow as ``?alt_hosts=host:port,host:port``: when the first host cannot
    be reached, clickhouse-driver connects to the next (it is a parameter of the driver's own
    URLs too), so a sink keeps writing while one node is down.
    """
    parts = urlsplit(url)
    db = database if database is not None else (parts.path.strip("/") or "default")
    extra: dict[str, Any] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name != "alt_hosts":
            raise ConfigError(
                f"unknown parameter {name!r} in the ClickHouse URL (known: alt_hosts)"
            )
        extra["alt_hosts"] = check_alt_hosts(",".join(values))
    return Client(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 9000,
        user=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=db,
        secure=parts.scheme == "clickhouses",
        connect_timeout=5,
        send_receive_timeout=60,
        settings=settings or None,
        **extra,
    )


def check_alt_hosts(value: str) -> str:
    """``value`` if it is ``host:port[,host:port...]``."""
    for part in value.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"alt_hosts in the ClickHouse URL: expected host:port,..., got {value!r}"
            )
    return value


def unavailable(url: str, err: BaseException) -> ServiceUnavailable:
    """The one-line error for a ClickHouse that cannot be reached."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 9000}"
    return ServiceUnavailable(
        f"ClickHouse at {where} is not reachable ({type(err).__name__}: {err}); "
        "start the local stack with `make up`, or set SIYU_CLICKHOUSE_URL"
    )


CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ch_errors.NetworkError,
    ch_errors.SocketTimeoutError,
    ConnectionError,
    OSError,
    EOFError,
)


def server_version(client: Client) -> ServerVersion:
    """The server's version (``SELECT version()``)."""
    rows = client.execute("SELECT version()")
    return ServerVersion.parse(str(rows[0][0]))
