"""ClickHouse cluster mode: the single-node migration statements rewritten for a cluster.

The numbered SQL files describe one server. With ``SIYU_CLICKHOUSE_CLUSTER`` set, each
statement is rewritten before it runs, so the files stay one source of truth for both:

* a ``*MergeTree`` table ``t`` becomes ``t_local``, a ``Replicated*MergeTree`` table on every
  node (ZooKeeper path from ``SIYU_CLICKHOUSE_REPLICA_PATH``, replica ``{replica}``), and
  ``t`` itself becomes a ``Distributed`` table over it, so inserts (the sink) and queries (the
  views, the cookbook) keep using the public name unchanged;
* every other DDL statement gets ``ON CLUSTER``, so it runs on every node;
* statements this module does not understand are refused, never guessed at.

Sharding keys (:data:`SHARDING_KEYS`) decide which shard a row lives on. ReplacingMergeTree
deduplicates (merges, ``FINAL``) only within one shard, so every version of a row must land on
the same shard: a table's sharding key may only use columns of its dedup key (the ORDER BY)
or columns that the dedup key determines (:data:`DETERMINED_BY_KEY`: one event has one user,
one purchase one buyer). Within that rule the keys keep a user's rows together.

Column comments are kept on the public (Distributed) table and left off the local replicated
one: ClickHouse 18.16 refuses to create a second replica of a table with column comments
("Table structure in ZooKeeper is too different from local table structure").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.errors import MigrationError
from pipeline.settings import Settings
from pipeline.sink.clickhouse import check_identifier

#: Columns each table is sharded by (``cityHash64`` of them). A table missing here is sharded
#: by its whole ORDER BY key, which is always correct but does not keep a user's rows together.
SHARDING_KEYS: dict[str, tuple[str, ...]] = {
    # A user's events, loyalty row, credits as a buyer and referrer row (sharer = user) share
    # one shard: cityHash64(brand_id, X) is the same for X = user_id, buyer_id, sharer_id.
    "events": ("brand_id", "user_id"),
    "user_loyalty": ("brand_id", "user_id"),
    "purchase_credits": ("brand_id", "buyer_id"),
    "referrers": ("brand_id", "sharer_id"),
    "koc_promotions": ("brand_id", "sharer_id"),
    # A share's chain row is keyed by the share alone (its sharer may change while an earlier
    # share event with the same id is still on its way, so it cannot be the key).
    "share_chains": ("brand_id", "share_id"),
    # The subject is the user, the share or the sharer, depending on the processor.
    "late_events": ("brand_id", "subject_id"),
    # The elements of one rejected message stay together.
    "dead_letters": ("source_topic", "source_partition", "source_offset"),
}

#: Columns outside a table's ORDER BY key that the key determines, so that they may shard it.
DETERMINED_BY_KEY: dict[str, frozenset[str]] = {
    # (brand_id, event_id) is one event of one user (event ids are unique per brand; the
    # domain keys its own dedup by user, so a reused id under another user is another event).
    "events": frozenset({"user_id"}),
    # (brand_id, purchase_event_id) is one purchase event, made by one buyer.
    "purchase_credits": frozenset({"buyer_id"}),
}

LOCAL_SUFFIX = "_local"
DEFAULT_REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
_ALTER_COLUMN_OPS = re.compile(r"^(ADD|DROP|MODIFY)\s+COLUMN\b", re.I)


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """Where the schema goes: the cluster name and the ZooKeeper path of replicated tables.

    ``replica_path`` may use ``{database}`` and ``{table}`` (filled in here) and the servers'
    macros such as ``{shard}`` (filled in by each server)."""

    cluster: str
    replica_path: str = DEFAULT_REPLICA_PATH

    def __post_init__(self) -> None:
        check_identifier(self.cluster)
        for needed in ("{database}", "{table}"):
            if needed not in self.replica_path:
                raise MigrationError(
                    f"replica path {self.replica_path!r} must contain {needed}, "
                    "or two tables would share one ZooKeeper path"
                )
        if "'" in self.replica_path or "\\" in self.replica_path:
            raise MigrationError(f"replica path {self.replica_path!r} may not contain quotes")

    def path(self, database: str, table: str) -> str:
        return self.replica_path.replace("{database}", database).replace("{table}", table)


def cluster_layout(settings: Settings) -> ClusterLayout | None:
    """The cluster the settings name (``SIYU_CLICKHOUSE_CLUSTER``), or None for one server."""
    if not settings.clickhouse_cluster:
        return None
    return ClusterLayout(settings.clickhouse_cluster, settings.clickhouse_replica_path)


def insert_settings(settings: Settings) -> dict[str, int]:
    """ClickHouse settings of the sink's inserts (and of migrate's records).

    In cluster mode an insert into a Distributed table returns only once every shard's
    replica has stored its rows (``insert_distributed_sync=1``, called
    ``distributed_foreground_insert`` in current ClickHouse, which keeps the old name as an
    alias). The default, asynchronous mode would return after spooling the rows on the
    receiving node's disk; the sink would then commit Kafka offsets for rows that no replica
    has yet, and lose them with that node's disk. Synchronous, a failed insert raises and the
    sink retries it: rows that had reached a shard arrive there again, land on the same shard
    (the sharding key is deterministic) and are absorbed by the replicated table's block
    deduplication (an identical block) or else by ReplacingMergeTree's key (FINAL, argMax).

    ``insert_quorum`` (``SIYU_CLICKHOUSE_INSERT_QUORUM``) makes an insert wait until that many
    replicas of the shard have it; then an insert fails, and the sink waits, while fewer are up.
    """
    if not settings.clickhouse_cluster:
        return {}
    out = {"insert_distributed_sync": 1}
    if settings.clickhouse_insert_quorum:
        out["insert_quorum"] = settings.clickhouse_insert_quorum
    return out


# --- A small SQL scanner: enough to find clauses outside string literals and parentheses ---


def _skip_quoted(text: str, i: int) -> int:
    """Index after the quoted literal or identifier starting at ``text[i]``."""
    quote = text[i]
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < len(text) and text[i + 1] == quote:  # '' inside a literal
                i += 2
                continue
            return i + 1
        i += 1
    raise MigrationError(f"unterminated {quote} in: {text[:80]}")


def _closing_paren(text: str, start: int) -> int:
    """Index of the ``)`` matching the ``(`` at ``text[start]``."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch in "'`\"":
            i = _skip_quoted(text, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise MigrationError(f"unbalanced parentheses in: {text[:80]}")


def _top_level(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` outside string literals and parentheses."""
    spans: list[tuple[int, int]] = []
    i = begin = 0
    while i < len(text):
        ch = text[i]
        if ch in "'`\"" or ch == "(":
            if i > begin:
                spans.append((begin, i))
            i = _skip_quoted(text, i) if ch != "(" else _closing_paren(text, i) + 1
            begin = i
            continue
        i += 1
    if begin < len(text):
        spans.append((begin, len(text)))
    return spans


def _find_top(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first match of ``pattern`` that starts outside literals and parentheses."""
    for begin, end in _top_level(text):
        m = pattern.search(text, begin, end)
        if m:
            return m
    return None


def _split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside literals and parentheses."""
    parts, last = [], 0
    for begin, end in _top_level(text):
        for i in range(begin, end):
            if text[i] == sep:
                parts.append(text[last:i])
                last = i + 1
    parts.append(text[last:])
    return [p.strip() for p in parts if p.strip()]


_COMMENT = re.compile(r"\s+COMMENT\s+'", re.I)


def strip_column_comments(columns: str) -> str:
    """Column definitions without their ``COMMENT '...'`` clauses (literals elsewhere kept)."""
    out, i, last = [], 0, 0
    while i < len(columns):
        ch = columns[i]
        if ch in "'`\"":
            i = _skip_quoted(columns, i)
            continue
        m = _COMMENT.match(columns, i)
        if m:
            out.append(columns[last:i])
            i = last = _skip_quoted(columns, m.end() - 1)
            continue
        i += 1
    out.append(columns[last:])
    return "".join(out)


# --- The transform ---------------------------------------------------------------------------

_CREATE_TABLE = re.compile(
    r"^CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<db>\w+)\.(?P<name>\w+)\s*", re.I
)
_CREATE_VIEW = re.compile(
    r"^CREATE\s+(?P<mat>MATERIALIZED\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+\.\w+", re.I
)
_DROP = re.compile(
    r"^DROP\s+(TABLE|VIEW)\s+(?P<ie>IF\s+EXISTS\s+)?(?P<db>\w+)\.(?P<name>\w+)", re.I
)
_ALTER = re.compile(r"^ALTER\s+TABLE\s+(?P<db>\w+)\.(?P<name>\w+)\s+", re.I)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>\w+)", re.I)
_ORDER_BY = re.compile(r"\bORDER\s+BY\s+", re.I)
_NEXT_CLAUSE = re.compile(r"\b(PARTITION\s+BY|PRIMARY\s+KEY|SAMPLE\s+BY|TTL|SETTINGS)\b", re.I)
_INSERT = re.compile(r"^INSERT\s+INTO\b", re.I)


@dataclass
class ClusterTransform:
    """Rewrites migration statements for ``layout``; remembers which tables it sharded, so a
    later ``DROP`` or ``ALTER`` of one reaches its local table too. Feed it every statement of
    every migration in order (applied ones included, without running them)."""

    layout: ClusterLayout
    sharded: set[str] = field(default_factory=set)

    @property
    def on_cluster(self) -> str:
        return f"ON CLUSTER {self.layout.cluster}"

    def statements(self, stmt: str) -> list[str]:
        """The cluster statements that do what ``stmt`` does on one server, in order."""
        text = stmt.strip()
        if m := _CREATE_TABLE.match(text):
            return self._create_table(text, m)
        if m := _CREATE_VIEW.match(text):
            if m.group("mat"):
                raise MigrationError(
                    "cluster mode does not rewrite materialized views (an insert into a "
                    "Distributed table triggers it on one node only); write the view over the "
                    f"_local tables in a migration of its own: {text[:80]}"
                )
            return [f"{text[: m.end()]} {self.on_cluster}{text[m.end() :]}"]
        if m := _DROP.match(text):
            out = [f"{text[: m.end()]} {self.on_cluster}{text[m.end() :]}"]
            if m.group("name") in self.sharded:
                local = m.group("name") + LOCAL_SUFFIX
                out.append(
                    f"DROP TABLE {m.group('ie') or ''}{m.group('db')}.{local} {self.on_cluster}"
                )
                self.sharded.discard(m.group("name"))
            return out
        if m := _ALTER.match(text):
            return self._alter(text, m)
        if _INSERT.match(text):
            # Runs once, on the node migrate talks to; the Distributed table spreads the rows.
            return [text]
        raise MigrationError(f"cluster mode does not know how to run this statement: {text[:80]}")

    def _create_table(self, text: str, head: re.Match[str]) -> list[str]:
        db, name = head.group("db"), head.group("name")
        rest = text[head.end() :]
        if not rest.startswith("("):
            raise MigrationError(f"cluster mode needs an explicit column list: {text[:80]}")
        close = _closing_paren(rest, 0)
        columns, tail = rest[: close + 1], rest[close + 1 :]
        engine = _find_top(_ENGINE, tail)
        if engine is None:
            raise MigrationError(f"no ENGINE clause in: {text[:80]}")
        kind = engine.group("engine")
        ine = "IF NOT EXISTS " if head.group("ine") else ""
        if not kind.endswith("MergeTree") or kind.startswith("Replicated"):
            return [f"CREATE TABLE {ine}{db}.{name} {self.on_cluster} {rest}"]
        after = tail[engine.end() :]
        args = ""
        if after.lstrip().startswith("("):
            after = after.lstrip()
            end = _closing_paren(after, 0)
            args, after = after[1:end].strip(), after[end + 1 :]
        path = self.layout.path(db, name)
        replicated_args = ", ".join(p for p in (f"'{path}'", "'{replica}'", args) if p)
        local = name + LOCAL_SUFFIX
        key = ", ".join(self._sharding_columns(name, after, text))
        self.sharded.add(name)
        return [
            f"CREATE TABLE {ine}{db}.{local} {self.on_cluster} {strip_column_comments(columns)}"
            f"{tail[: engine.start()]}ENGINE = Replicated{kind}({replicated_args}){after}",
            f"CREATE TABLE {ine}{db}.{name} {self.on_cluster} {columns}\n"
            f"ENGINE = Distributed({self.layout.cluster}, {db}, {local}, cityHash64({key}))",
        ]

    def _sharding_columns(self, table: str, clauses: str, text: str) -> tuple[str, ...]:
        order_by = _order_by_columns(clauses)
        if order_by is None:
            raise MigrationError(
                f"cluster mode shards {table} by its ORDER BY key, which must be a column or a "
                f"tuple of columns; or add {table} to SHARDING_KEYS in {__name__}: {text[:80]}"
            )
        columns = SHARDING_KEYS.get(table, order_by)
        allowed = set(order_by) | DETERMINED_BY_KEY.get(table, frozenset())
        if not set(columns) <= allowed:
            raise MigrationError(
                f"sharding key {columns} of {table} uses {sorted(set(columns) - allowed)}, "
                f"outside its dedup key {order_by}: versions of one row could land on "
                "different shards, where ReplacingMergeTree cannot merge them"
            )
        return columns

    def _alter(self, text: str, head: re.Match[str]) -> list[str]:
        db, name = head.group("db"), head.group("name")
        commands = text[head.end() :]
        if name not in self.sharded:
            return [f"ALTER TABLE {db}.{name} {self.on_cluster} {commands}"]
        if not all(_ALTER_COLUMN_OPS.match(c) for c in _split_top(commands)):
            raise MigrationError(
                f"cluster mode alters the sharded table {name} only with ADD/DROP/MODIFY "
                f"COLUMN: {text[:80]}"
            )
        return [
            f"ALTER TABLE {db}.{name}{LOCAL_SUFFIX} {self.on_cluster} "
            + strip_column_comments(commands),
            f"ALTER TABLE {db}.{name} {self.on_cluster} {commands}",
        ]


def _order_by_columns(clauses: str) -> tuple[str, ...] | None:
    """The columns of ``ORDER BY col`` or ``ORDER BY (col, ...)``; None for expressions."""
    m = _find_top(_ORDER_BY, clauses)
    if m is None:
        return None
    rest = clauses[m.end() :]
    if rest.startswith("("):
        inner = rest[1 : _closing_paren(rest, 0)]
    else:
        nxt = _find_top(_NEXT_CLAUSE, rest)
        inner = rest[: nxt.start()] if nxt else rest
    parts = _split_top(inner)
    if not parts or not all(re.fullmatch(r"\w+", p) for p in parts):
        return None
    return tuple(parts)
