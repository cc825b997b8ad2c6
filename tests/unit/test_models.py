import pytest
import torch

from mmops.datasets.tensors import Preprocessor, collate
from mmops.domains import load_domain
from mmops.models import build_model


@pytest.fixture
def medical_batch():
    import numpy as np

    pack = load_domain("medical")
    rng = np.random.default_rng(0)
    values = [
        {"report": "Heart size normal. No effusion.", "ecg": rng.normal(size=(180, 1)).astype("float32"),
         "fundus": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)},
        {"report": "Cardiomegaly with small left effusion."},  # no ECG, no image
        {"ecg": rng.normal(size=(90, 1)).astype("float32")},   # short strip, zero-padded
    ]
    batch = collate(pack, Preprocessor(), values)
    inputs = {k: torch.from_numpy(v) for k, v in batch.inputs.items()}
    masks = {k: torch.from_numpy(v) for k, v in batch.masks.items()}
    return pack, inputs, masks


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_forward_handles_missing_modalities(medical_batch, fusion: str) -> None:
    pack, inputs, masks = medical_batch
    torch.manual_seed(0)
    model = build_model(pack, {"embed_dim": 16, "fusion": fusion}).eval()
    logits = model(inputs, masks)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    assert masks["fundus"].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_a_missing_modality_cannot_influence_the_prediction(medical_batch, fusion: str) -> None:
    """Behavioural: whatever sits in the slot of an absent modality, the output is the same."""
    pack, inputs, masks = medical_batch
    torch.manual_seed(0)
    model = build_model(pack, {"embed_dim": 16, "fusion": fusion}).eval()
    before = model(inputs, masks)
    noisy = dict(inputs, fundus=torch.rand_like(inputs["fundus"]))
    after = model(noisy, masks)
    torch.testing.assert_close(before[1:], after[1:])  # records 1, 2 have no fundus image
    assert not torch.allclose(before[0], after[0])      # record 0 has one: it matters


def test_modality_dropout_keeps_at_least_one_modality(medical_batch) -> None:
    pack, inputs, masks = medical_batch
    model = build_model(pack, {"embed_dim": 8, "fusion": "concat", "modality_dropout": 0.99}).train()
    torch.manual_seed(1)
    _, kept = model.embed(inputs, masks)
    assert (kept.sum(dim=1) >= 1).all()
    assert (kept <= torch.stack([masks[n] for n in model.names], dim=1)).all()
