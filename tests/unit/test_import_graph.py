"""The shape of `mmops` (docs/concepts.md): no import cycles between its modules, and no core module imports a
face (the CLI, the demos, the project's own Airflow, the DAGs). The faces call the core; never the other way.
Imports inside functions count: they are how a cycle hides."""

from __future__ import annotations

import graphlib
import sys
from pathlib import Path

import grimp
import pytest

# The faces: what a person or a scheduler runs. Everything else in mmops is the core.
FACES = ("mmops.cli", "mmops.demo", "mmops.drift_demo", "mmops.airflow_local", "dags")


def problems(package: str) -> list[str]:
    """Each import cycle inside `package`, and each arrow from a core module to a face."""
    graph = grimp.build_graph(package, include_external_packages=True, cache_dir=None)
    inside = {m for m in graph.modules if m == package or m.startswith(package + ".")}
    found = []
    deps = {m: graph.find_modules_directly_imported_by(m) & inside for m in inside}
    try:
        graphlib.TopologicalSorter(deps).prepare()
    except graphlib.CycleError as exc:
        found.append("import cycle: " + " -> ".join(reversed(exc.args[1])))
    for module in sorted(inside):
        if module.startswith(FACES):
            continue
        for face in sorted(graph.find_modules_directly_imported_by(module)):
            if face.startswith(FACES):
                found.append(f"core module {module} imports the face {face}")
    return found


def test_mmops_has_no_import_cycles_and_no_arrow_from_core_to_a_face() -> None:
    assert problems("mmops") == []


def test_the_check_finds_a_cycle_hidden_in_a_function_and_a_core_module_calling_a_face(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from toy import b\n")
    (pkg / "b.py").write_text("def f():\n    from toy import a\n")
    (pkg / "stages.py").write_text("def run():\n    import dags.train\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = problems("toy")
    assert any(p.startswith("import cycle:") and "toy.a" in p and "toy.b" in p for p in found), found
    assert "core module toy.stages imports the face dags" in found, found
    sys.modules.pop("toy", None)


def test_dvcs_train_stage_depends_on_every_module_that_training_runs() -> None:
    """Editing any code that training imports (a modality's decoding, the inference helpers) must make
    `dvc repro` retrain rather than reuse a stale model (the real `dvc status` check: tests/integration/test_dvc.py)."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    deps = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["do"]["deps"]
    graph = grimp.build_graph("mmops", cache_dir=None)
    runs = graph.find_upstream_modules("mmops.training") | {"mmops.training"}
    missing = []
    for module in sorted(runs):
        path = Path(*module.split("."))
        files = [path / "__init__.py", path.with_suffix(".py")]
        if not any(f.is_relative_to(dep) for f in files if (repo / f).exists() for dep in map(Path, deps)):
            missing.append(module)
    assert missing == [], f"dvc.yaml's train stage does not depend on {missing}"
