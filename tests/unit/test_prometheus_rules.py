"""The Prometheus config and alert rules under deploy/prometheus/ are valid, their promtool
unit tests pass, and they only name metrics that siyu really exports.

promtool comes with Debian's prometheus package (``make system`` installs it). Without it
these tests fail and say so: a skipped rule check would pass broken rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline import metrics

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not installed: run `make system` (Debian's prometheus package) "
            "or `sudo apt-get install prometheus`"
        )
    return subprocess.run(
        [exe, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=300, check=False
    )


def test_there_are_rules_and_tests() -> None:
    assert RULE_FILES and TEST_FILES


def test_config_is_valid_and_finds_the_rule_files() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(RULE_FILES)} rule files found" in done.stdout + done.stderr


def test_rules_are_valid() -> None:
    done = promtool("check", "rules", *(str(p.relative_to(PROMETHEUS)) for p in RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    done = promtool("test", "rules", str(test_file.relative_to(PROMETHEUS)))
    assert done.returncode == 0, done.stdout + done.stderr


def _rules() -> list[dict[str, object]]:
    rules: list[dict[str, object]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def _exported_names() -> set[str]:
    """Every sample name the worker registry can export (counters with _total, histograms
    with _bucket/_sum/_count)."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_rules_name_only_metrics_siyu_exports() -> None:
    exported = _exported_names()
    recorded = {str(r["record"]) for r in _rules() if "record" in r}
    for rule in _rules():
        for name in re.findall(r"(?<![:\w])siyu_[a-z_]+(?![:\w])", str(rule["expr"])):
            if name.startswith("siyu_collector_"):
                continue  # the collector's own registry, checked by its tests
            assert name in exported, f"{rule.get('alert') or rule.get('record')}: {name}"
        for name in re.findall(r"\b[a-z_]+:siyu_[a-z_:0-9]+\b", str(rule["expr"])):
            assert name in recorded, f"{rule.get('alert') or rule.get('record')}: {name}"


def test_every_alert_is_documented() -> None:
    text = DOCS.read_text().lower()
    for rule in _rules():
        if "alert" in rule:
            name = str(rule["alert"])
            assert f"### {name.lower()}" in text, f"docs/alerts.md has no section for {name}"
            annotations = rule["annotations"]
            assert isinstance(annotations, dict)
            assert f"docs/alerts.md#{name.lower()}" in annotations["description"]
