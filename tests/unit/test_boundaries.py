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
# Paths, not file names: a ``bench.py`` inside a subpackage is no entry point.
COMPOSITION_ROOT = {"streams/cli.py", "streams/run.py", "streams/demo.py", "streams/bench.py"}
PRESENTATION = ROOT / "streams" / "present"
# Presentation formats what the entry points hand it: no broker, no database, no worker, no
# metrics client. Its own streams imports are checked by name in presentation_offences.
PRESENTATION_FORBIDDEN = IO_LIBRARIES - {"streams"}


def imported_modules(path: Path) -> set[str]:
    """Absolute imports by full name, lazy ones inside functions included; ``from a import b``
    gives ``a.b`` (a submodule or a name in ``a``). Relative imports are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def imported_roots(path: Path) -> set[str]:
    return {module.split(".")[0] for module in imported_modules(path)}


def presentation_offences(path: Path) -> list[str]:
    """What ``path`` (under streams/present/) imports that presentation must not: a Kafka,
    Faust or ClickHouse client, sinks, or a streams module outside streams.present."""
    return sorted(
        module
        for module in imported_modules(path)
        if module.split(".")[0] in PRESENTATION_FORBIDDEN
        or (module.startswith("streams.") and not module.startswith("streams.present."))
        or module == "streams"
    )


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
        if path.relative_to(ROOT).as_posix() not in COMPOSITION_ROOT
        and "sinks" in imported_roots(path)
    ]
    assert offenders == []


def test_presentation_imports_no_kafka_sinks_or_the_rest_of_streams() -> None:
    paths = sorted(PRESENTATION.rglob("*.py"))
    assert len(paths) > 1, f"no presentation modules under {PRESENTATION}"
    offenders = {str(path.relative_to(ROOT)): presentation_offences(path) for path in paths}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_itself_sees_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import kafka.admin\nfrom faust import App\nfrom . import x\n")
    assert imported_roots(probe) == {"kafka", "faust"}


def test_the_presentation_check_sees_a_way_back_into_kafka(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from streams import feed\n"
        "from streams.present import charts\n"
        "from streams.present.charts import PALETTE\n"
        "import orjson\n"
        "def later():\n"
        "    from sinks.views import campaign_report\n"
        "    import streams.producer\n"
    )
    assert presentation_offences(probe) == [
        "sinks.views.campaign_report",
        "streams.feed",
        "streams.producer",
    ]
