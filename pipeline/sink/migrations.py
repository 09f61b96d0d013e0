"""Versioned schema migrations: numbered SQL files applied in order, recorded, safe to rerun.

Files live in ``pipeline/sink/sql/NNNN_name.sql``; statements are separated by a line
ending in ``;``. Two kinds of placeholders are filled before a file runs, both identifiers or
type names, never values: ``{db}`` (the database) and feature types chosen from the server
version (``{lc_string}`` is ``LowCardinality(String)`` where the server has it, else
``String``). Which features were used is printed, never silently dropped.

With a :class:`~pipeline.sink.cluster.ClusterLayout` (``SIYU_CLICKHOUSE_CLUSTER``) the same
files create the schema on a cluster: every statement is rewritten by
:class:`~pipeline.sink.cluster.ClusterTransform` (``ON CLUSTER``, replicated local tables behind
Distributed ones), the migrations table included. A database is created in one mode and stays
in it: migrating it in the other mode is refused.
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
from pipeline.sink.cluster import ClusterLayout, ClusterTransform

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
    for entry in (resources.files("pipeline.sink") / "sql").iterdir():
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


def _migrations_table(db: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE} "
        "(version UInt32, name String, checksum String, applied_at DateTime) "
        "ENGINE = MergeTree() ORDER BY version"
    )


def check_cluster(client: Client, layout: ClusterLayout) -> None:
    """The server knows the cluster and the macros the replicated tables' paths use."""
    found = client.execute(
        "SELECT count() FROM system.clusters WHERE cluster = %(c)s", {"c": layout.cluster}
    )
    if not found[0][0]:
        raise MigrationError(
            f"cluster {layout.cluster!r} (SIYU_CLICKHOUSE_CLUSTER) is not in the server's "
            "<remote_servers>; see system.clusters"
        )
    needed = set(re.findall(r"\{(\w+)\}", layout.replica_path)) - {"database", "table"}
    needed.add("replica")
    have = {str(r[0]) for r in client.execute("SELECT macro FROM system.macros")}
    if needed - have:
        raise MigrationError(
            f"the server has no macro {', '.join(sorted(needed - have))} in <macros>, which "
            f"the replicated tables need (path {layout.replica_path!r}, replica '{{replica}}')"
        )


def _check_mode(client: Client, db: str, layout: ClusterLayout | None) -> None:
    """Refuse to migrate a database created in the other mode (single server or cluster)."""
    rows = client.execute(
        "SELECT engine FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": db, "t": MIGRATIONS_TABLE},
    )
    if not rows:
        return
    clustered = str(rows[0][0]) == "Distributed"
    if layout is not None and not clustered:
        raise MigrationError(
            f"database {db} was created for a single server; cluster mode "
            f"(SIYU_CLICKHOUSE_CLUSTER={layout.cluster}) needs a database of its own"
        )
    if layout is None and clustered:
        raise MigrationError(
            f"database {db} was created in cluster mode; set SIYU_CLICKHOUSE_CLUSTER to "
            "the cluster it was created on"
        )


def migrate(
    client: Client,
    database: str,
    version: ServerVersion,
    *,
    cluster: ClusterLayout | None = None,
    log: Callable[[str], None] = print,
) -> list[int]:
    """Create the database and apply every migration not applied yet. Returns applied versions.

    Safe to run twice: applied versions are recorded in ``{database}.siyu_schema_migrations``,
    and a recorded migration whose file changed since is an error, not a silent skip. Two
    runs at once both apply what neither had recorded; every statement is idempotent
    (``IF NOT EXISTS``), so the result is the same and the version is recorded twice.

    With ``cluster``, statements run ``ON CLUSTER`` (every node must be up: each waits for
    all nodes, up to the server's ``distributed_ddl_task_timeout``) and the client must
    insert into Distributed tables synchronously (``insert_distributed_sync=1``), so that the
    migration record is stored before it is relied on.
    """
    db = check_identifier(database)
    transform = ClusterTransform(cluster) if cluster is not None else None

    def rewrite(stmt: str) -> list[str]:
        return transform.statements(stmt) if transform is not None else [stmt]

    if cluster is not None:
        check_cluster(client, cluster)
    _check_mode(client, db, cluster)
    if cluster is None:
        client.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    else:
        log(
            f"cluster mode: ON CLUSTER {cluster.cluster}, Replicated*MergeTree tables at "
            f"{cluster.replica_path} behind Distributed tables"
        )
        client.execute(f"CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cluster.cluster}")
    for stmt in rewrite(_migrations_table(db)):
        client.execute(stmt)
    applied = {
        int(v): str(c)
        for v, c in client.execute(f"SELECT version, checksum FROM {db}.{MIGRATIONS_TABLE}")
    }
    types = feature_types(version)
    log(f"ClickHouse {version}: " + ", ".join(f"{k} -> {v}" for k, v in sorted(types.items())))
    done: list[int] = []
    for mig in load_migrations():
        # Rewritten even when applied: the transform learns which tables it sharded.
        statements = [out for stmt in mig.statements({"db": db, **types}) for out in rewrite(stmt)]
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise MigrationError(
                    f"migration {mig.version:04d}_{mig.name} was applied with checksum "
                    f"{applied[mig.version]} but the file now has {mig.checksum}; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for stmt in statements:
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
