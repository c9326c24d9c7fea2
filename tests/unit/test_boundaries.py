"""The import direction of STYLE.md: pipeline is pure; streams and sinks meet in pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = {
    "kafka",
    "faust",
    "aiokafka",
    "mode",
    "clickhouse_driver",
    "chdb",
    "prometheus_client",
    "aiohttp",
    "streams",
    "sinks",
}
COMPOSITION_ROOT = {"cli.py", "run.py", "demo.py", "bench.py"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_pipeline_imports_no_io_library() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & IO_LIBRARIES)
        for path in (ROOT / "pipeline").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_sinks_never_import_streams_or_kafka() -> None:
    forbidden = {"streams", "kafka", "faust", "aiokafka", "mode"}
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & forbidden)
        for path in (ROOT / "sinks").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_composition_root_of_streams_imports_sinks() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "streams").rglob("*.py")
        if path.name not in COMPOSITION_ROOT and "sinks" in imported_roots(path)
    ]
    assert offenders == []


def test_the_check_itself_sees_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import kafka.admin\nfrom faust import App\nfrom . import x\n")
    assert imported_roots(probe) == {"kafka", "faust"}
