"""Versioned schema migrations: numbered SQL files applied in order, recorded, safe to rerun.

Files live in ``pipeline/migrations/NNNN_name.sql``; statements are separated by a line
ending in ``;``. Two kinds of placeholders are filled before a file runs, both identifiers or
type names, never values: ``{db}`` (the database) and feature types chosen from the server
version (``{lc_string}`` is ``LowCardinality(String)`` where the server has it, else
``String``). Which features were used is printed, never silently dropped.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from clickhouse_driver import Client

from pipeline.errors import MigrationError
from pipeline.sink.clickhouse import ServerVersion, check_identifier

MIGRATIONS_TABLE = "siyu_schema_migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, substitutions: dict[str, str]) -> list[str]:
        text = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        text = text.format(**substitutions)
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


def load_migrations() -> list[Migration]:
    """All migration files shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("pipeline.migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number: {versions}")
    return found


def feature_types(version: ServerVersion) -> dict[str, str]:
    """Type names that depend on what the server supports (decided by its version)."""
    return {
        # LowCardinality is GA from 19.0 (experimental behind a setting before).
        "lc_string": "LowCardinality(String)" if version.at_least(19, 0) else "String",
    }


def migrate(
    client: Client,
    database: str,
    version: ServerVersion,
    *,
    log: Callable[[str], None] = print,
) -> list[int]:
    """Create the database and apply every migration not applied yet. Returns applied versions.

    Safe to run twice: applied versions are recorded in ``{database}.siyu_schema_migrations``,
    and a recorded migration whose file changed since is an error, not a silent skip.
    """
    db = check_identifier(database)
    client.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.execute(
        f"CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE} "
        "(version UInt32, name String, checksum String, applied_at DateTime) "
        "ENGINE = MergeTree() ORDER BY version"
    )
    applied = {
        int(v): str(c)
        for v, c in client.execute(f"SELECT version, checksum FROM {db}.{MIGRATIONS_TABLE}")
    }
    types = feature_types(version)
    log(f"ClickHouse {version}: " + ", ".join(f"{k} -> {v}" for k, v in sorted(types.items())))
    done: list[int] = []
    for mig in load_migrations():
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise MigrationError(
                    f"migration {mig.version:04d}_{mig.name} was applied with checksum "
                    f"{applied[mig.version]} but the file now has {mig.checksum}; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for stmt in mig.statements({"db": db, **types}):
            client.execute(stmt)
        client.execute(
            f"INSERT INTO {db}.{MIGRATIONS_TABLE} (version, name, checksum, applied_at) VALUES",
            [(mig.version, mig.name, mig.checksum, int(time.time()))],
        )
        log(f"applied {mig.version:04d}_{mig.name}")
        done.append(mig.version)
    if not done:
        log("schema is up to date")
    return done
