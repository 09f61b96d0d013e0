"""The Dockerfile, the compose stack and the Kubernetes manifests, held against the code.

No Docker engine or cluster runs here: the files are parsed and checked for what breaks a
deployment quietly (valid YAML, images pinned to versions, mounted and copied files that
exist, probes on paths and ports the processes really serve, SIYU_* variables that are real
settings with valid values). The second half breaks copies of the files on purpose and
checks that each mistake is reported, so the checks themselves can fail.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import deploy_checks as dc


@pytest.fixture(scope="module")
def routes() -> dc.Routes:
    return dc.Routes.discover()


@pytest.fixture(scope="module")
def dockerfile() -> dc.Dockerfile:
    return dc.parse_dockerfile(dc.DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose_text() -> str:
    return dc.COMPOSE.read_text()


@pytest.fixture
def compose(compose_text: str) -> dict[str, Any]:
    return dict(yaml.safe_load(compose_text))


@pytest.fixture
def manifests() -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    return dc.load_manifests(dc.K8S)


def _doc(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    return next(
        c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name
    )


# --- the real files ---------------------------------------------------------------------------


def test_compose_and_manifests_are_valid_yaml_documents(compose: dict[str, Any]) -> None:
    assert isinstance(compose.get("services"), dict) and compose["services"]
    paths = sorted(dc.K8S.glob("*.yaml"))
    assert paths
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            if path.name != "kustomization.yaml":
                assert doc.get("apiVersion") and doc.get("kind"), path
                assert doc.get("metadata", {}).get("name"), path


def test_probed_processes_serve_health_and_readiness(routes: dc.Routes) -> None:
    # The probes below are only as good as this discovery: it must see the real routes.
    for command in ("worker", "collector"):
        assert {"/healthz", "/readyz"} <= routes.by_command[command], command


def test_dockerfile_is_multi_stage_pinned_non_root_with_state_volume(
    dockerfile: dc.Dockerfile,
) -> None:
    assert dc.check_dockerfile(dockerfile, dc.DOCKERIGNORE.read_text(), dc.ROOT) == []


def test_compose_stack_matches_the_code_and_the_repository(
    compose: dict[str, Any], compose_text: str, dockerfile: dc.Dockerfile, routes: dc.Routes
) -> None:
    assert dc.check_compose(compose, compose_text, dc.COMPOSE.parent, dockerfile, routes) == []


def test_compose_prometheus_scrapes_every_worker_and_collector(
    compose: dict[str, Any], dockerfile: dc.Dockerfile
) -> None:
    assert dc.check_compose_scrapes(compose, dc.COMPOSE.parent, dockerfile) == []


def test_compose_runs_the_collector_and_two_workers(compose: dict[str, Any]) -> None:
    commands = [dc._command(s.get("command")) for s in compose["services"].values()]
    assert commands.count(["worker"]) == 2
    assert ["collector"] in commands and ["migrate"] in commands


def test_kubernetes_manifests_match_the_code(
    manifests: tuple[dict[str, Any], list[str], list[dict[str, Any]]],
    dockerfile: dc.Dockerfile,
    routes: dc.Routes,
) -> None:
    kustomization, listing_problems, docs = manifests
    assert listing_problems == []
    assert dc.check_manifests(kustomization, docs, dockerfile, routes) == []
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Secret", "StatefulSet", "Deployment"} <= kinds
    assert {"Service", "PodDisruptionBudget"} <= kinds


# --- the checks catch mistakes ------------------------------------------------------------------


def test_a_misspelt_variable_in_a_copy_of_the_compose_file_is_reported(
    tmp_path: Path, compose_text: str, dockerfile: dc.Dockerfile, routes: dc.Routes
) -> None:
    assert "SIYU_TOPIC_PARTITIONS:" in compose_text
    broken = tmp_path / "compose.yaml"
    broken.write_text(compose_text.replace("SIYU_TOPIC_PARTITIONS:", "SIYU_TOPIC_PARTITION:"))
    text = broken.read_text()
    problems = dc.check_compose(yaml.safe_load(text), text, dc.COMPOSE.parent, dockerfile, routes)
    assert any("SIYU_TOPIC_PARTITION is not a setting" in p for p in problems), problems


def test_a_misspelt_interpolated_variable_is_reported(
    compose: dict[str, Any], compose_text: str, dockerfile: dc.Dockerfile, routes: dc.Routes
) -> None:
    text = compose_text.replace("${SIYU_COLLECTOR_KEYS:?", "${SIYU_COLLECTOR_KEY:?")
    problems = dc.check_compose(compose, text, dc.COMPOSE.parent, dockerfile, routes)
    assert any("SIYU_COLLECTOR_KEY is not a setting" in p for p in problems), problems


def test_an_invalid_setting_value_is_reported(
    manifests: tuple[dict[str, Any], list[str], list[dict[str, Any]]],
    dockerfile: dc.Dockerfile,
    routes: dc.Routes,
) -> None:
    kustomization, _, docs = manifests
    _doc(docs, "ConfigMap", "siyu-config")["data"]["SIYU_STORE"] = "rocksbd"
    problems = dc.check_manifests(kustomization, docs, dockerfile, routes)
    assert any("SIYU_STORE='rocksbd'" in p for p in problems), problems


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        ("apache/kafka:3.9.1", True),
        ("prom/prometheus:v3.5.0", True),
        ("python:3.11.14-slim-trixie", True),
        ("clickhouse/clickhouse-server:26.3", True),
        ("grafana/grafana@sha256:" + "0" * 64, True),
        ("grafana/grafana", False),
        ("grafana/grafana:latest", False),
        ("python:slim", False),
        ("registry.local:5000/siyu", False),
    ],
)
def test_image_pinning_rule(ref: str, pinned: bool) -> None:
    assert (dc.image_problem(ref, "here") is None) is pinned


def test_an_unpinned_image_in_compose_is_reported(
    compose: dict[str, Any], compose_text: str, dockerfile: dc.Dockerfile, routes: dc.Routes
) -> None:
    compose["services"]["grafana"]["image"] = "grafana/grafana:latest"
    compose["services"]["kafka"]["image"] = "apache/kafka"
    problems = dc.check_compose(compose, compose_text, dc.COMPOSE.parent, dockerfile, routes)
    assert any("grafana/grafana:latest" in p for p in problems), problems
    assert any("'apache/kafka' has no tag" in p for p in problems), problems


def test_a_siyu_image_tag_other_than_the_package_version_is_reported(
    manifests: tuple[dict[str, Any], list[str], list[dict[str, Any]]],
    dockerfile: dc.Dockerfile,
    routes: dc.Routes,
) -> None:
    kustomization, _, docs = manifests
    kustomization = copy.deepcopy(kustomization)
    kustomization["images"][0]["newTag"] = "9.9.9"
    problems = dc.check_manifests(kustomization, docs, dockerfile, routes)
    assert any("should be tagged" in p for p in problems), problems


def test_a_missing_mounted_file_is_reported(
    compose: dict[str, Any], compose_text: str, dockerfile: dc.Dockerfile, routes: dc.Routes
) -> None:
    volumes = compose["services"]["prometheus"]["volumes"]
    volumes[:] = [v.replace("../prometheus/rules", "../prometheus/rulez") for v in volumes]
    problems = dc.check_compose(compose, compose_text, dc.COMPOSE.parent, dockerfile, routes)
    assert any("../prometheus/rulez does not exist" in p for p in problems), problems


def test_a_wrong_probe_path_or_port_is_reported(
    compose: dict[str, Any],
    compose_text: str,
    manifests: tuple[dict[str, Any], list[str], list[dict[str, Any]]],
    dockerfile: dc.Dockerfile,
    routes: dc.Routes,
) -> None:
    kustomization, _, docs = manifests
    worker = _container(_doc(docs, "StatefulSet", "siyu-worker"), "worker")
    worker["readinessProbe"]["httpGet"]["path"] = "/ready"
    problems = dc.check_manifests(kustomization, docs, dockerfile, routes)
    assert any("probe path /ready is not served by `siyu worker`" in p for p in problems)

    test = compose["services"]["collector"]["healthcheck"]["test"]
    test[:] = [t.replace("8090", "8091") for t in test]
    problems = dc.check_compose(compose, compose_text, dc.COMPOSE.parent, dockerfile, routes)
    assert any("probe port 8091" in p for p in problems), problems


def test_a_web_port_bound_to_loopback_is_reported(
    manifests: tuple[dict[str, Any], list[str], list[dict[str, Any]]],
    dockerfile: dc.Dockerfile,
    routes: dc.Routes,
) -> None:
    kustomization, _, docs = manifests
    del _doc(docs, "ConfigMap", "siyu-config")["data"]["SIYU_WORKER_WEB_HOST"]
    # Without the ConfigMap's value the image's default applies; without both, loopback.
    text = dc.DOCKERFILE.read_text()
    assert "SIYU_WORKER_WEB_HOST=0.0.0.0" in text
    image_default = dc.parse_dockerfile(
        text.replace("SIYU_WORKER_WEB_HOST=0.0.0.0", "SIYU_LOG_LEVEL=info")
    )
    problems = dc.check_manifests(kustomization, docs, image_default, routes)
    assert any("SIYU_WORKER_WEB_HOST=127.0.0.1" in p for p in problems), problems


def test_worker_state_off_the_persistent_volume_is_reported(
    manifests: tuple[dict[str, Any], list[str], list[dict[str, Any]]],
    dockerfile: dc.Dockerfile,
    routes: dc.Routes,
) -> None:
    kustomization, _, docs = manifests
    worker = _container(_doc(docs, "StatefulSet", "siyu-worker"), "worker")
    worker["volumeMounts"] = [m for m in worker["volumeMounts"] if m["name"] != "state"]
    _doc(docs, "ConfigMap", "siyu-config")["data"]["SIYU_STANDBY_REPLICAS"] = "0"
    problems = dc.check_manifests(kustomization, docs, dockerfile, routes)
    assert any("is not a volumeClaimTemplate mount" in p for p in problems), problems
    assert any("SIYU_STANDBY_REPLICAS is 0" in p for p in problems), problems


def test_a_reference_to_a_missing_secret_key_is_reported(
    manifests: tuple[dict[str, Any], list[str], list[dict[str, Any]]],
    dockerfile: dc.Dockerfile,
    routes: dc.Routes,
) -> None:
    kustomization, _, docs = manifests
    secret = _doc(docs, "Secret", "siyu-secrets")
    secret["stringData"]["SIYU_CLICKHOUSE_PASSWORD"] = secret["stringData"].pop(
        "SIYU_CLICKHOUSE_URL"
    )
    problems = dc.check_manifests(kustomization, docs, dockerfile, routes)
    assert any("SIYU_CLICKHOUSE_PASSWORD is not a setting" in p for p in problems), problems
    assert any("refers to missing Secret key" in p for p in problems), problems


def test_a_budget_or_service_selecting_nothing_is_reported(
    manifests: tuple[dict[str, Any], list[str], list[dict[str, Any]]],
    dockerfile: dc.Dockerfile,
    routes: dc.Routes,
) -> None:
    kustomization, _, docs = manifests
    pdb = _doc(docs, "PodDisruptionBudget", "siyu-worker")
    pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "workers"
    _doc(docs, "Service", "siyu-worker")["spec"]["clusterIP"] = "10.0.0.1"
    problems = dc.check_manifests(kustomization, docs, dockerfile, routes)
    assert any("PodDisruptionBudget siyu-worker: selects no" in p for p in problems), problems
    assert any("no headless Service siyu-worker" in p for p in problems), problems


def test_an_unknown_siyu_command_is_reported(
    compose: dict[str, Any], compose_text: str, dockerfile: dc.Dockerfile, routes: dc.Routes
) -> None:
    compose["services"]["migrate"]["command"] = ["migrations"]
    problems = dc.check_compose(compose, compose_text, dc.COMPOSE.parent, dockerfile, routes)
    assert any("`siyu migrations` is not a siyu command" in p for p in problems), problems
    # ... and the workers no longer wait for a migration.
    assert any("does not wait for a `siyu migrate`" in p for p in problems), problems


def test_workers_sharing_a_state_volume_are_reported(
    compose: dict[str, Any], compose_text: str, dockerfile: dc.Dockerfile, routes: dc.Routes
) -> None:
    compose["services"]["worker-2"]["volumes"] = ["worker-1-state:/var/lib/siyu"]
    problems = dc.check_compose(compose, compose_text, dc.COMPOSE.parent, dockerfile, routes)
    assert any("workers share a state volume" in p for p in problems), problems


def test_an_unscraped_worker_is_reported(
    tmp_path: Path, compose: dict[str, Any], dockerfile: dc.Dockerfile
) -> None:
    config = yaml.safe_load((dc.COMPOSE.parent / "prometheus.yml").read_text())
    config["scrape_configs"][0]["static_configs"][0]["targets"] = ["worker-1:6066"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    volumes = compose["services"]["prometheus"]["volumes"]
    volumes[0] = f"{tmp_path}/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    problems = dc.check_compose_scrapes(compose, dc.COMPOSE.parent, dockerfile)
    assert problems == ["compose: Prometheus does not scrape worker-2 at worker-2:6066"]


def test_dockerfile_mistakes_are_reported(dockerfile: dc.Dockerfile) -> None:
    text = dc.DOCKERFILE.read_text()
    ignore = dc.DOCKERIGNORE.read_text()
    root_user = dc.parse_dockerfile(text.replace("USER 10001:10001", "USER root"))
    assert any("runs as 'root'" in p for p in dc.check_dockerfile(root_user, ignore, dc.ROOT))
    compilers = dc.parse_dockerfile(
        text + "\nRUN apt-get update && apt-get install -y build-essential\n"
    )
    assert any("build tools" in p for p in dc.check_dockerfile(compilers, ignore, dc.ROOT))
    no_volume = dc.parse_dockerfile(text.replace('VOLUME ["/var/lib/siyu"]', ""))
    assert any("is not a VOLUME" in p for p in dc.check_dockerfile(no_volume, ignore, dc.ROOT))
    unpinned = dc.parse_dockerfile(text.replace("python:3.11.14-slim-trixie", "python:slim"))
    assert any("python:slim" in p for p in dc.check_dockerfile(unpinned, ignore, dc.ROOT))
    ignored = dc.parse_dockerfile(text.replace("COPY pipeline ./pipeline", "COPY tests ./tests"))
    assert any(
        "'tests' is excluded by .dockerignore" in p
        for p in dc.check_dockerfile(ignored, ignore, dc.ROOT)
    )


def test_dockerignore_lets_in_only_the_package_sources() -> None:
    rules = dc.parse_dockerignore(dc.DOCKERIGNORE.read_text())
    assert dc.included(rules, "pipeline/worker/app.py")
    assert dc.included(rules, "pipeline/sink/sql/0001_events.sql")
    assert dc.included(rules, "pyproject.toml")
    assert not dc.included(rules, "pipeline/__pycache__/app.cpython-311.pyc")
    assert not dc.included(rules, ".venv/bin/python")
    assert not dc.included(rules, "tests/unit/test_app.py")
    assert not dc.included(rules, ".env")


def test_a_one_shot_service_nothing_waits_for_is_reported(
    compose: dict[str, Any], compose_text: str, dockerfile: dc.Dockerfile, routes: dc.Routes
) -> None:
    del compose["services"]["collector"]["depends_on"]["topics"]
    for worker in ("worker-1", "worker-2"):
        compose["services"][worker]["depends_on"].pop("topics", None)  # one shared dict
    problems = dc.check_compose(compose, compose_text, dc.COMPOSE.parent, dockerfile, routes)
    assert "compose service topics: one-shot, but no service waits for it" in problems


def test_compose_grafana_sees_siyu_data_sources_by_service_name_and_its_dashboards(
    compose: dict[str, Any],
) -> None:
    assert dc.check_compose_grafana(compose, dc.COMPOSE.parent) == []


def test_a_grafana_override_with_other_data_sources_is_reported(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    # A copy of deploy/compose whose Grafana data sources file renamed a uid.
    (tmp_path / "deploy" / "compose" / "grafana").mkdir(parents=True)
    (tmp_path / "deploy" / "grafana").symlink_to(dc.ROOT / "deploy" / "grafana")
    override = yaml.safe_load((dc.COMPOSE.parent / "grafana" / "datasources.yaml").read_text())
    override["datasources"][0]["uid"] = "clickhouse"
    copy_ = tmp_path / "deploy" / "compose" / "grafana" / "datasources.yaml"
    copy_.write_text(yaml.safe_dump(override))
    problems = dc.check_compose_grafana(compose, tmp_path / "deploy" / "compose")
    assert any("has other data sources than" in p for p in problems), problems


def test_grafana_mount_and_environment_mistakes_are_reported(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    del grafana["environment"]["CLICKHOUSE_PASSWORD"]
    volumes = grafana["volumes"]
    volumes.append("./grafana/datasources.yaml:/etc/grafana/provisioning/datasources/x.yaml")
    volumes[:] = [v for v in volumes if "/var/lib/grafana/dashboards" not in v]
    problems = dc.check_compose_grafana(compose, dc.COMPOSE.parent)
    assert any("reads ${CLICKHOUSE_PASSWORD}, which is not set" in p for p in problems)
    assert any("x.yaml, which does not exist" in p for p in problems), problems
    assert any("dashboards path /var/lib/grafana/dashboards/siyu is not" in p for p in problems)
