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


def _bento_include(repo: Path):
    """Whether `bentoml build` copies a path: bentofile.yaml's include and exclude, matched as BentoML matches
    them (gitwildmatch: `*` stops at a slash, unlike fnmatch)."""
    import yaml
    from pathspec import PathSpec

    config = yaml.safe_load((repo / "bentofile.yaml").read_text())
    include = PathSpec.from_lines("gitwildmatch", config["include"])
    exclude = PathSpec.from_lines("gitwildmatch", config.get("exclude", []))
    return lambda rel: include.match_file(rel) and not exclude.match_file(rel)


def test_the_bento_carries_every_module_the_service_imports() -> None:
    """bentofile.yaml lists what a deployment needs; a module the service imports but the bento leaves out
    would fail only when the bento starts, far from here."""
    from mmops.modalities.registry import _BUNDLED

    repo = Path(__file__).resolve().parents[2]
    included = _bento_include(repo)

    graph = grimp.build_graph("mmops", cache_dir=None)
    service = "mmops.serving.service"
    # the bundled modality kinds are imported by name when the registry loads (not an import statement)
    roots = {service, *(ref.split(":")[0] for ref in _BUNDLED)}
    needed = set(roots).union(*(graph.find_upstream_modules(m) for m in roots))
    needed |= {m.rsplit(".", i)[0] for m in needed for i in range(1, m.count(".") + 1)}  # their packages
    missing = []
    for module in sorted(needed):
        path = Path(*module.split("."))
        rel = (path / "__init__.py" if (repo / path).is_dir() else path.with_suffix(".py")).as_posix()
        if not included(rel):
            missing.append(rel)
    assert missing == [], f"bentofile.yaml's include leaves out {missing}"


def test_the_service_imports_from_the_bentos_files_alone(tmp_path: Path) -> None:
    """The files bentofile.yaml includes, copied alone, import the service (as `bentoml serve mmops-D` does
    from the bento's src/ folder), with nothing taken from the source tree."""
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    included = _bento_include(repo)
    for path in (repo / "mmops").rglob("*"):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and "__pycache__" not in rel and included(rel):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, tmp_path / rel)
    # every included module imports (the task kinds, loaded by name when a model of theirs is served, and
    # their explanations included), each from the bento's files
    code = ("import sys, importlib, pathlib; sys.path.insert(0, sys.argv[1]); import mmops.serving.service as s; "
            "assert s.__file__.startswith(sys.argv[1]), s.__file__; "
            "from mmops.modalities.registry import kinds; import inspect; "
            "assert all(inspect.getfile(type(k)).startswith(sys.argv[1]) for k in kinds().values()), kinds(); "
            "from mmops.tasks import task_kinds, task_of; "
            "assert all(inspect.getfile(type(task_of(t))).startswith(sys.argv[1]) for t in task_kinds()); "
            "root = pathlib.Path(sys.argv[1]); "
            "mods = [importlib.import_module('.'.join(p.relative_to(root).with_suffix('').parts).removesuffix("
            "'.__init__')) for p in sorted(root.rglob('*.py'))]; "
            "assert all(m.__file__.startswith(sys.argv[1]) for m in mods); "
            "outside = [n for n, m in sys.modules.items() if n.split('.')[0] == 'mmops' "
            "and not (getattr(m, '__file__', None) or sys.argv[1]).startswith(sys.argv[1])]; "
            "assert not outside, f'imported from outside the bento: {outside}'")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (tmp_path / "mmops" / "cli.py").exists() and not (tmp_path / "mmops" / "stages").exists()


def test_modules_and_functions_stay_readable() -> None:
    """Each module of mmops reads on its own: at most 400 lines, and no function over 80 (docs/concepts.md)."""
    import ast

    repo = Path(__file__).resolve().parents[2]
    too_long = []
    for path in sorted((repo / "mmops").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(repo).as_posix()
        if len(text.splitlines()) > 400:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 80:
                    too_long.append(f"{rel}: {node.name} is {n} lines")
    assert too_long == []
