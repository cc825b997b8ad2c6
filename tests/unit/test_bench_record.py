"""benchmarks/record.py: what a benchmark run leaves in var/bench/, and docs/benchmarks.md made from it."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # the module, with var/bench/ in tmp_path
    spec = importlib.util.spec_from_file_location("bench_record", REPO / "benchmarks" / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "bench")
    monkeypatch.setattr(sys, "argv", ["benchmarks/bench_gate.py", "--repeat", "1"])
    return module


def test_a_run_is_recorded_with_its_command_machine_and_verdicts(record, tmp_path: Path) -> None:
    path = record.save("gate", {"gx_s": 1.25, "same_verdicts": True, "phases": {"a": 0.5}},
                       {"GX agrees with pandas": True})
    saved = json.loads(path.read_text())
    assert saved["command"] == "python benchmarks/bench_gate.py --repeat 1"
    assert saved["machine"]["cpus"] >= 1 and "mmops" in saved["versions"]
    assert saved["figures"]["gx_s"] == 1.25 and saved["verdicts"] == {"GX agrees with pandas": True}


def test_the_page_shows_every_run_its_figures_and_missed_targets(record, tmp_path: Path) -> None:
    record.save("gate", {"gx_s": 1.25, "expectations": 1200}, {"GX agrees with pandas": True})
    record.save("serve", {"runs": [{"domain": "industrial", "clients": 8, "rps": 250.5},
                                   {"domain": "industrial", "clients": 32, "rps": 410.0}]},
                {"batched >= unbatched": False})
    page = record.render(tmp_path / "bench")
    assert page.index("## Validation gate") < page.index("## Serving")  # the page's order, not the files'
    assert "| gx_s | 1.25 |" in page and "| expectations | 1,200 |" in page
    assert "| domain | clients | rps |" in page and "| industrial | 32 | 410 |" in page
    assert "| batched >= unbatched | **no** |" in page and "| GX agrees with pandas | yes |" in page
    assert "`python benchmarks/bench_gate.py --repeat 1`" in page
    never = [name for name in record.TITLES if name not in ("gate", "serve")]  # in the page's order
    assert never[:3] == ["ingest", "ingest-surveillance", "ingest-scale"] and len(never) == len(record.TITLES) - 2
    assert f"Never measured: {', '.join(never)}." in page


def test_a_benchmark_not_run_again_keeps_its_section_and_a_new_run_replaces_its_own(record, tmp_path: Path) -> None:
    record.save("gate", {"gx_s": 1.25}, {"GX agrees with pandas": True})
    record.save("drift", {"rows": 1000}, {})
    before = record.render(tmp_path / "bench")
    (tmp_path / "bench" / "gate.json").unlink()  # a fresh checkout: only this run's figures
    record.save("drift", {"rows": 5000}, {})
    record.save("audio", {"real_time_factor": 2500.0}, {"log-mel >= 1000x real time": True})
    page = record.render(tmp_path / "bench", earlier=before)
    assert "| gx_s | 1.25 |" in page and "| GX agrees with pandas | yes |" in page  # kept from the page before
    assert "| rows | 5,000 |" in page and "| rows | 1,000 |" not in page  # replaced by the new run
    assert page.index("## Validation gate") < page.index("## Drift") < page.index("## Audio front end")
    assert page.count("## Validation gate") == 1 and "Never measured: ingest," in page
