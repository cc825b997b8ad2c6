from pathlib import Path

import pytest

from mmops.config import Params, Settings, load_params
from mmops.domains import load_domain
from mmops.errors import ConfigError, NotFoundError


def test_params_reject_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\ntrain:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_params(path)


def test_params_defaults_and_bounds(tmp_path: Path) -> None:
    assert load_params(tmp_path / "missing.yaml") == Params()
    path = tmp_path / "params.yaml"
    path.write_text("build:\n  test_size: 0.9\n")
    with pytest.raises(ConfigError, match="test_size"):
        load_params(path)


def test_repository_params_are_valid() -> None:
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert params.domains == ["medical", "security", "industrial", "surveillance", "cardiac", "watch", "inspection"]
    from mmops.domains import load_domain
    from mmops.tasks import task_of

    tasks = {}
    for domain in params.domains:  # each loads, and its task kind accepts it
        pack = load_domain(domain)
        task_of(pack.task).check_pack(pack)
        tasks[domain] = pack.task
    # the anomaly task in each kind of deployment: medical, security, industrial
    assert {d for d, t in tasks.items() if t == "anomaly"} == {"cardiac", "watch", "inspection"}


def test_database_url_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMOPS_HOME", str(tmp_path))
    assert Settings().catalog_url == f"sqlite:///{tmp_path.resolve()}/var/catalog.db"
    monkeypatch.setenv("MMOPS_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().catalog_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("name,modalities", [
    ("medical", {"report": "text", "ecg": "sensor", "fundus": "image"}),
    ("security", {"camera": "image"}),
    ("industrial", {"accel": "sensor", "gyro": "sensor"}),
])
def test_bundled_domain_packs(name: str, modalities: dict[str, str]) -> None:
    pack = load_domain(name)
    assert {m.name: m.kind for m in pack.modalities} == modalities


def test_a_new_domain_is_configuration_only(project: Path) -> None:
    (project / "domains").mkdir()
    (project / "domains" / "bakery.yaml").write_text(
        "name: bakery\ndescription: oven cameras\nclasses: [ok, burnt]\n"
        "modalities:\n  - {name: oven, kind: image, size: [16, 16], channels: 3}\n")
    assert load_domain("bakery").modality("oven").size == (16, 16)


def test_bad_domain_packs(project: Path) -> None:
    (project / "domains").mkdir()
    (project / "domains" / "twice.yaml").write_text(
        "name: twice\ndescription: x\nclasses: [a, b]\nmodalities:\n"
        "  - {name: cam, kind: image}\n  - {name: cam, kind: text}\n")
    with pytest.raises(ConfigError, match="duplicate modality"):
        load_domain("twice")
    with pytest.raises(NotFoundError):
        load_domain("nope")


def test_the_projects_env_file_sets_the_catalog_under_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    from mmops.config import get_settings

    monkeypatch.setenv("MMOPS_HOME", str(tmp_path))
    (tmp_path / ".env").write_text("# deployment settings\nMMOPS_DATABASE_URL=postgresql+psycopg://u@h/db\n"
                                   "AIRFLOW__CORE__LOAD_EXAMPLES=False\n")  # another tool's name: left to it
    assert get_settings().catalog_url == "postgresql+psycopg://u@h/db"
    monkeypatch.setenv("MMOPS_DATABASE_URL", "sqlite:///elsewhere.db")  # the environment wins
    assert get_settings().catalog_url == "sqlite:///elsewhere.db"
    (tmp_path / ".env").write_text("MMOPS_DATABSE_URL=postgresql://typo\n")
    with pytest.raises(ConfigError, match="MMOPS_DATABSE_URL cannot be set here"):
        get_settings()


def test_a_domain_pack_may_set_its_own_training_params(project: Path) -> None:
    from mmops.context import Context

    (project / "domains").mkdir()
    pack = ("name: plugs\ndescription: smart plugs\nclasses: [fan, lamp]\n"
            "modalities:\n  - {name: current, kind: sensor, channels: [amps], length: 50, sample_rate_hz: 10}\n")
    (project / "domains" / "plugs.yaml").write_text(pack + "train: {epochs: 80, patience: 20}\n")
    params = Context.resolve("plugs").params
    assert (params.train.epochs, params.train.patience) == (80, 20)
    assert params.train.lr == load_params().train.lr  # the rest from params.yaml
    other = Context.resolve("security").params
    assert other.train.epochs == load_params().train.epochs  # other domains keep params.yaml's
    (project / "domains" / "plugs.yaml").write_text(pack + "train: {epochs: 0}\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_domain("plugs")
    (project / "domains" / "plugs.yaml").write_text(pack + "train: {epoch: 80}\n")
    with pytest.raises(ConfigError, match="epoch"):
        load_domain("plugs")


def test_add_domain_keeps_params_comments_and_refuses_what_it_cannot_edit(project: Path) -> None:
    from mmops.config import add_domain

    path = project / "params.yaml"
    path.write_text("seed: 1\npacks:   # which data\n  security: security-faces\n\n  # more\ntrain:\n  epochs: 2\n")
    assert add_domain("plugs", path) is True
    assert load_params(path).packs == {"security": "security-faces", "plugs": None}
    assert "# which data" in path.read_text() and "# more" in path.read_text()
    assert add_domain("plugs", path) is False  # listed already: unchanged
    flow = "packs: {security: security-faces}\n"
    path.write_text(flow)
    with pytest.raises(ConfigError, match="as a block"):
        add_domain("plugs", path)
    assert path.read_text() == flow
    path.write_text("seed: 3\n")  # no packs block: the defaults stay listed, with the new domain
    add_domain("plugs", path)
    assert load_params(path).domains == ["medical", "security", "industrial", "surveillance", "plugs"]
