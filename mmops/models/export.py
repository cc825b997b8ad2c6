"""Whether the model is being traced for ONNX: the encoders then take paths the exporters can follow (no
packed sequences, no data-dependent trims), with the same results."""

import torch


def exporting() -> bool:
    """Inside an ONNX export (the TorchScript-based exporter or torch.export's)."""
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())
