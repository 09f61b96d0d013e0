"""The layout tells the architecture (docs/architecture.md): dependencies point one way, the
top level stays small, no class passes 300 lines, and the event-type union
is spelled once. These read the source; they fail when a change breaks the shape."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "pipeline"


def _module(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources(package: str) -> list[Path]:
    return sorted((PIPELINE / package).rglob("*.py"))


#: Streaming runtimes and clients: I/O that the contract and the domain never touch.
_RUNTIMES = ("faust", "mode", "aiokafka", "kafka", "clickhouse_driver", "prometheus_client")


def _allowed(module: str, allowed: tuple[str, ...]) -> bool:
    top = module.split(".")[0]
    if top in ("pipeline", "tests"):
        return module.startswith(allowed)
    return top not in _RUNTIMES


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("contract", ("pipeline.contract", "pipeline.errors")),
        ("domain", ("pipeline.domain", "pipeline.contract")),
    ],
)
def test_the_contract_and_the_domain_import_no_worker_sink_faust_or_io(
    package: str, allowed: tuple[str, ...]
) -> None:
    wrong = {
        f"{_module(path)} imports {module}"
        for path in _sources(package)
        for module in _imports(path)
        if not _allowed(module, allowed)
    }
    assert not wrong


def test_the_sdk_reaches_the_pipeline_only_through_the_contract_and_settings() -> None:
    wrong = {
        f"{_module(path)} imports {module}"
        for path in _sources("sdk")
        for module in _imports(path)
        if module.startswith("pipeline.")
        and not module.startswith(
            ("pipeline.sdk", "pipeline.contract", "pipeline.errors", "pipeline.settings")
        )
    }
    assert not wrong


def test_no_module_of_the_package_imports_the_tests() -> None:
    wrong = {
        _module(path)
        for path in PIPELINE.rglob("*.py")
        if any(m == "tests" or m.startswith("tests.") for m in _imports(path))
    }
    assert not wrong


def test_the_top_level_holds_only_what_every_process_shares() -> None:
    modules = sorted(p.name for p in PIPELINE.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 6, modules


def test_no_class_is_longer_than_300_lines() -> None:
    long = {
        f"{_module(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path in PIPELINE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.ClassDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 300
    }
    assert not long


def test_the_event_type_union_is_spelled_once() -> None:
    member = r"(?:Click|Share|Purchase)Event"
    union = re.compile(rf"\b{member}\s*\|\s*{member}\s*\|\s*{member}\b")
    places = [
        f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}"
        for root in (PIPELINE, REPO / "tests")
        for path in root.rglob("*.py")
        for text in [path.read_text("utf-8")]
        for m in union.finditer(text)
    ]
    assert len(places) == 1, places
    assert places[0].startswith("pipeline/contract/events.py:"), places
