"""The Grafana provisioning under deploy/grafana/: its structure (what Grafana requires, uids
that resolve, conditions that name a query), and every query run for real: the ClickHouse
ones on current ClickHouse (chdb) with generated data, the Prometheus ones through promtool.
tests/integration/test_grafana_queries.py runs the same ClickHouse queries on 18.16.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import metrics
from pipeline.sink.clickhouse import ServerVersion
from pipeline.sink.migrations import migrate
from tests import grafana
from tests.chdb_client import ChdbClient
from tests.grafana import (
    ALERT_CASES,
    CLICKHOUSE,
    DASHBOARD_VARIABLES,
    EXPR,
    AlertCase,
    Runner,
)
from tests.scenario import START, generate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"
PROMETHEUS_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
UID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")

# -- Structure --------------------------------------------------------------------------------


def test_every_provisioning_file_has_api_version_1() -> None:
    for kind in ("datasources", "dashboards", "alerting"):
        files = grafana.yaml_files(kind)
        assert files, f"no {kind} provisioning file"
        for path, doc in files:
            assert doc.get("apiVersion") == 1, path


def test_data_sources_have_fixed_unique_uids_and_what_their_plugin_needs() -> None:
    listed = [ds for _, doc in grafana.yaml_files("datasources") for ds in doc["datasources"]]
    uids = [ds["uid"] for ds in listed]
    assert len(uids) == len(set(uids))
    by_type = {ds["type"]: ds for ds in listed}
    assert set(by_type) == {CLICKHOUSE, "prometheus"}
    for ds in listed:
        assert UID.match(ds["uid"]) and ds["name"] and ds["access"] == "proxy"
    ch = by_type[CLICKHOUSE]["jsonData"]
    # The fields plugin v4 reads (pkg/plugin/settings.go): host, port, protocol, ...
    assert ch["host"] and isinstance(ch["port"], int)
    assert ch["protocol"] in {"native", "http"}
    assert ch["defaultDatabase"] and ch["username"]
    assert "password" in by_type[CLICKHOUSE]["secureJsonData"]
    assert by_type["prometheus"]["url"].startswith("http")


def test_dashboard_provider_loads_the_dashboard_folder() -> None:
    (_, doc), *_ = grafana.yaml_files("dashboards")
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["name"] and provider["options"]["path"]
    assert len(grafana.dashboard_files()) == 4


def _datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict):
            yield ds
        for value in node.values():
            yield from _datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_refs(value)


@pytest.mark.parametrize("path", grafana.dashboard_files(), ids=lambda p: p.name)
def test_dashboard_is_valid_with_unique_panel_ids_and_resolving_data_sources(path: Path) -> None:
    import json

    dashboard = json.loads(path.read_text())  # valid JSON, or this raises
    assert UID.match(dashboard["uid"]) and dashboard["title"] and dashboard["schemaVersion"]
    panels = list(grafana.panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    sources = grafana.datasources()
    refs = list(_datasource_refs(dashboard))
    assert refs
    for ref in refs:
        assert ref["uid"] in sources, f"{path.name}: unknown data source {ref}"
        assert sources[ref["uid"]]["type"] == ref["type"], ref
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            if target["datasource"]["type"] == CLICKHOUSE:
                assert target["editorType"] == "sql" and target["rawSql"].strip()
                assert (target["queryType"], target["format"]) in {("table", 1), ("timeSeries", 0)}
            else:
                assert target["expr"].strip()


def test_dashboard_uids_are_unique() -> None:
    uids = [d["uid"] for d in grafana.dashboards().values()]
    assert len(uids) == len(set(uids))


def test_alert_rules_have_what_grafana_requires_and_conditions_that_exist() -> None:
    sources = grafana.datasources()
    rules = [r for g in grafana.alert_groups() for r in g["rules"]]
    assert len({r["uid"] for r in rules}) == len(rules)
    for group in grafana.alert_groups():
        assert group["name"] and group["folder"] and re.match(r"^\d+[smh]$", group["interval"])
    for rule in rules:
        assert UID.match(rule["uid"]) and rule["title"], rule["uid"]
        assert rule["noDataState"] in {"NoData", "Alerting", "OK", "KeepLast"}
        assert rule["execErrState"] in {"Error", "Alerting", "OK", "KeepLast"}
        assert re.match(r"^\d+[smh]$", rule["for"])
        ref_ids = [q["refId"] for q in rule["data"]]
        assert len(ref_ids) == len(set(ref_ids)), rule["uid"]
        assert rule["condition"] in ref_ids, rule["uid"]
        for query in rule["data"]:
            model = query["model"]
            assert model["refId"] == query["refId"]
            if query["datasourceUid"] == EXPR:
                assert model["type"] in {"reduce", "threshold", "math", "classic_conditions"}
                assert model["expression"] in ref_ids and model["expression"] != query["refId"]
            else:
                assert query["datasourceUid"] in sources, rule["uid"]
                assert model["datasource"]["uid"] == query["datasourceUid"]
                span = query["relativeTimeRange"]
                assert span["from"] > span["to"] >= 0
        condition = next(q for q in rule["data"] if q["refId"] == rule["condition"])
        assert condition["model"]["type"] == "threshold"


def test_every_alert_links_its_section_of_the_docs() -> None:
    text = DOCS.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[4:].strip().lower()).replace(" ", "-")
        for line in text.splitlines()
        if line.startswith("### ")
    }
    for uid, rule in grafana.alert_rules().items():
        link = re.search(r"docs/alerts\.md#([a-z0-9-]+)", rule["annotations"]["description"])
        assert link, uid
        assert link.group(1) in anchors, f"{uid}: no section #{link.group(1)} in docs/alerts.md"
        assert rule["title"].lower().replace(" ", "-") == link.group(1)


# -- Macros -----------------------------------------------------------------------------------


def test_expand_replaces_the_plugin_macros_and_variables() -> None:
    sql = (
        "SELECT $__interval_s FROM t WHERE $__timeFilter(at) AND b = ${brand:sqlstring} "
        "AND x < $__toTime AND y > $__fromTime"
    )
    out = grafana.expand(sql, start=10, end=20, interval_s=60, variables={"brand": "o'k"})
    assert out == (
        "SELECT 60 FROM t WHERE at >= toDateTime(10) AND at <= toDateTime(20) AND b = 'o''k' "
        "AND x < toDateTime(20) AND y > toDateTime(10)"
    )
    with pytest.raises(ValueError):
        grafana.expand("SELECT $__timeInterval(at)", start=1, end=2)
    with pytest.raises(ValueError):
        grafana.expand("SELECT ${nope}", start=1, end=2)


# -- Queries on current ClickHouse (chdb) ---------------------------------------------------


class _Chdb:
    """A chdb session holding one migrated database per data set."""

    def __init__(self) -> None:
        self.client = ChdbClient()
        self.version = ServerVersion.parse(str(self.client.execute("SELECT version()")[0][0]))

    def database(self, tables: grafana.Tables) -> str:
        name = f"g{uuid.uuid4().hex[:10]}"
        migrate(self.client, name, self.version, log=lambda _: None)  # type: ignore[arg-type]
        tables.insert(self.client, name)
        return name

    def runner(self, database: str) -> Runner:
        def run(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
            import orjson

            # Column names are needed for labels: read chdb's JSONCompact meta directly.
            self.client.execute(f"USE {database}")
            raw = self.client._session.query(sql, "JSONCompact")
            data = raw.bytes() if hasattr(raw, "bytes") else bytes(raw)
            if not data.strip():
                return [], []
            parsed = orjson.loads(data)
            return [m["name"] for m in parsed["meta"]], [tuple(r) for r in parsed["data"]]

        return run


@pytest.fixture(scope="module")
def chdb() -> Iterator[_Chdb]:
    engine = _Chdb()
    yield engine
    engine.client.disconnect()


@pytest.mark.parametrize("case", ALERT_CASES, ids=lambda c: c.uid)
def test_alert_query_fires_for_the_synthetic_problem_only(chdb: _Chdb, case: AlertCase) -> None:
    grafana.check_alert_case(case, chdb.runner(chdb.database(case.tables())))


@pytest.fixture(scope="module")
def dashboard_db(chdb: _Chdb) -> str:
    return chdb.database(grafana.scenario_tables(generate(seed=606, n_events=1200)))


@pytest.mark.parametrize(
    "query", grafana.dashboard_queries(), ids=lambda q: f"{q[0]}:{q[1]}".replace(" ", "_")
)
def test_dashboard_query_runs_and_finds_data(
    chdb: _Chdb, dashboard_db: str, query: tuple[str, str, str]
) -> None:
    _, _, raw = query
    start = int(START.timestamp())
    sql = grafana.expand(
        raw, start=start, end=start + 30 * 86400, interval_s=3600, variables=DASHBOARD_VARIABLES
    )
    names, rows = chdb.runner(dashboard_db)(sql)
    assert names and rows, sql


# -- Prometheus queries (promtool) --------------------------------------------------------------


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: run `make system` (Debian's prometheus package)")
    return exe


def _prometheus_exprs() -> list[tuple[str, str]]:
    out = [
        (f"{name}: {title}", target["expr"])
        for name, dashboard in grafana.dashboards().items()
        for title, target in grafana.targets(dashboard, "prometheus")
    ]
    for uid, rule in grafana.alert_rules().items():
        for query in rule["data"]:
            if "expr" in query["model"]:
                out.append((uid, query["model"]["expr"]))
    return out


def test_every_promql_query_parses_and_names_real_metrics(tmp_path: Path) -> None:
    exprs = _prometheus_exprs()
    assert exprs
    rules = [
        {"record": f"check:expr_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    done = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    exported = {f.name for f in metrics.REGISTRY.collect()}
    recorded = {
        r["record"]
        for p in PROMETHEUS_RULES.glob("*.yml")
        for g in yaml.safe_load(p.read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    }
    for where, expr in exprs:
        for name in re.findall(r"(?<![:\w])siyu_[a-z_]+(?![:\w])", expr):
            if name.startswith("siyu_collector_"):
                continue
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert name in exported or base in exported, f"{where}: {name}"
        for name in re.findall(r"\b[a-z_]+:siyu_[a-z_:0-9]+\b", expr):
            assert name in recorded, f"{where}: {name}"


def test_grafana_lag_alert_fires_for_growing_lag_only(tmp_path: Path) -> None:
    """The Grafana rule's PromQL query and threshold, evaluated by promtool as an alert."""
    rule = grafana.alert_rules()["siyu-consumer-lag-growing"]
    expr = next(q for q in rule["data"] if q["refId"] == "A")["model"]["expr"]
    threshold = next(q for q in rule["data"] if q["refId"] == rule["condition"])["model"]
    (condition,) = threshold["conditions"]
    assert condition["evaluator"]["type"] == "gt"
    alert = f"({expr}) > {condition['evaluator']['params'][0]}"
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"alert": "Lag", "expr": alert}]}]}, sort_keys=False
        )
    )
    series = {
        # Growing by 100 a minute over two partitions: above 1000 after 10 minutes.
        '{topic="siyu.by-user", partition="0", instance="w1"}': "0+60x60",
        '{topic="siyu.by-user", partition="1", instance="w2"}': "0+40x60",
        # Far behind but catching up.
        '{topic="siyu.events", partition="0", instance="w1"}': "50000-100x60",
        # Growing but small.
        '{topic="siyu.rows", partition="0", instance="w1"}': "0+5x60",
    }
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"siyu_consumer_lag_messages{labels}", "values": values}
                    for labels, values in series.items()
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "Lag", "exp_alerts": []},
                    {
                        "eval_time": "30m",
                        "alertname": "Lag",
                        "exp_alerts": [{"exp_labels": {"topic": "siyu.by-user"}}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run(
        [_promtool(), "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
