"""The model as ONNX: exported once at packaging (torch.onnx's TorchScript-based exporter, a dynamic batch axis;
the encoders take export-friendly paths with the same results, mmops/models/export.py), quantized to int8 on
request (ONNX Runtime's dynamic quantization of the weights), and run by ONNX Runtime behind the interface
of the eager model that inference.predict_batch calls."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from mmops.datasets.tensors import Batch
from mmops.errors import ValidationFailedError

GROUPS = (("in", "inputs"), ("mask", "masks"), ("len", "lengths"))  # ONNX input "<kind>.<modality>"
OUTPUTS = ["logits", "embeddings"]
OPSET = 17
# what int8 quantizes: matrix products, attention, embedding tables. Convolutions stay float: ONNX Runtime's
# integer convolution ran the security image model at 172 records/s against eager torch's 1,057 on this CPU
# (benchmarks/bench_runtimes.py, 2026-12-07), where its float one ran 2,003.
INT8_OPS = ("MatMul", "Attention", "Gather", "LSTM", "EmbedLayerNormalization")


def _inputs(batch: Batch) -> list[tuple[str, str, str]]:
    """(ONNX input name, Batch attribute, modality) of every tensor the model takes."""
    return [(f"{kind}.{m}", attr, m) for kind, attr in GROUPS for m in getattr(batch, attr)]


def export(model: Any, batch: Batch, path: Path) -> Path:
    """Write `model` (a FusionClassifier) as ONNX, traced on the first rows of `batch`, with the batch axis
    dynamic; outputs the logits and the modality embeddings. Whatever the trace fixed that it should not have
    shows in the parity gate, which runs the file on the whole test split."""
    import numpy as np
    import torch

    for m, encoder in dict(model.encoders).items():  # a sequence input the example rows lack still has lengths
        if encoder.takes_lengths and m not in batch.lengths:
            batch.lengths[m] = np.full(len(batch), batch.inputs[m].shape[-1], dtype=np.int64)
    names = _inputs(batch)

    class Flat(torch.nn.Module):
        """The model over positional tensors, in `names` order (what an ONNX graph's inputs are)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> tuple[Any, Any]:
            groups: dict[str, dict[str, Any]] = {attr: {} for _, attr in GROUPS}
            for (_, attr, m), t in zip(names, tensors, strict=True):
                groups[attr][m] = t
            logits, embs, _ = self.model.forward_with_embeddings(groups["inputs"], groups["masks"], groups["lengths"])
            return logits, embs

    rows = min(len(batch), 2)
    example = tuple(torch.from_numpy(getattr(batch, attr)[m][:rows]) for _, attr, m in names)
    flat = Flat().eval()  # export restores the mode it found: eval, so that the eager model stays in eval
    tmp = path.with_name(f".{path.name}.tmp")
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused attention kernel has no ONNX form
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes it records as constants: checked below
            torch.onnx.export(flat, example, str(tmp), input_names=[n for n, _, _ in names], output_names=OUTPUTS,
                              dynamic_axes={n: {0: "batch"} for n in [*(n for n, _, _ in names), *OUTPUTS]},
                              opset_version=OPSET, dynamo=False)
    except Exception as exc:  # the exporter raises many types (unsupported operator, tracing errors)
        tmp.unlink(missing_ok=True)
        raise ValidationFailedError(f"the model does not export to ONNX: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.eval()
    os.replace(tmp, path)
    return path


def quantize(src: Path, dst: Path) -> Path:
    """`src` with the weights of INT8_OPS quantized to int8 (ONNX Runtime's dynamic quantization: activations
    quantized on the fly), written to `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(f".{dst.name}.tmp")
    quiet = logging.Filter()
    quiet.filter = lambda record: "pre-processing before quantization" not in record.getMessage()  # type: ignore[method-assign]
    logging.getLogger().addFilter(quiet)  # its advice goes to the root logger on every call
    try:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OPS))
    except Exception as exc:  # onnxruntime and onnx raise their own types
        tmp.unlink(missing_ok=True)
        raise ValidationFailedError(f"ONNX Runtime could not quantize {src.name} to int8: {exc}") from exc
    finally:
        logging.getLogger().removeFilter(quiet)
    os.replace(tmp, dst)
    return dst


class OnnxModel:
    """An exported model in an ONNX Runtime session, answering forward_with_embeddings as the eager one does."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # no busy-waiting between calls: the model process shares the CPUs with the API workers and the batcher
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for a bad or truncated file
            raise ValidationFailedError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.names = {i.name for i in self.session.get_inputs()}
        self.path = path

    def eval(self) -> OnnxModel:
        return self

    def forward_with_embeddings(self, inputs: dict[str, Any], masks: dict[str, Any],
                                lengths: dict[str, Any] | None = None,
                                features: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
        import numpy as np
        import torch

        feeds = {}
        for (kind, _), group in zip(GROUPS, (inputs, masks, lengths or {}), strict=True):
            for m, t in group.items():
                if f"{kind}.{m}" in self.names:  # the exporter drops inputs the graph never reads
                    feeds[f"{kind}.{m}"] = t.detach().cpu().numpy()
        for name in self.names - feeds.keys():  # lengths of a sequence no record of the batch has: its full length
            series = feeds[f"in.{name.split('.', 1)[1]}"]
            feeds[name] = np.full(len(series), series.shape[-1], dtype=np.int64)
        logits, embs = self.session.run(OUTPUTS, feeds)
        present = torch.stack([masks[m] for m in masks], dim=1) if masks else None
        return torch.from_numpy(logits), torch.from_numpy(embs), present
