"""runtime.json in a packaged model (mmops/runtimes): eager torch without one; a runtime named without its file,
an unknown runtime or an unreadable file is a clear error, not a service that answers with something else."""

import json
from pathlib import Path

import pytest

from mmops.errors import BadInputError
from mmops.runtimes import RUNTIME_FILE, runtime_of


def test_runtime_of_a_packaged_model(tmp_path: Path) -> None:
    assert runtime_of(tmp_path) == {"runtime": "torch"}
    (tmp_path / RUNTIME_FILE).write_text(json.dumps({"runtime": "onnx", "file": "model.onnx"}))
    with pytest.raises(BadInputError, match="with file 'model.onnx', which is not in"):
        runtime_of(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    assert runtime_of(tmp_path)["file"] == "model.onnx"
    (tmp_path / RUNTIME_FILE).write_text(json.dumps({"runtime": "tensorrt", "file": "model.onnx"}))
    with pytest.raises(BadInputError, match="names runtime 'tensorrt'"):
        runtime_of(tmp_path)
    (tmp_path / RUNTIME_FILE).write_text("{not json")
    with pytest.raises(BadInputError, match="is unreadable"):
        runtime_of(tmp_path)


def test_a_truncated_onnx_file_is_refused_when_loaded(tmp_path: Path) -> None:
    from mmops.errors import ValidationFailedError
    from mmops.runtimes.onnx import OnnxModel

    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x03abc")  # the first bytes of a model, cut off
    with pytest.raises(ValidationFailedError, match="ONNX Runtime cannot load"):
        OnnxModel(tmp_path / "model.onnx")
