"""The video kind on a real surveillance clip (opencv-doc's vtest.avi: pedestrians, 768x576, 10 fps, MS-MPEG4;
Apache-2.0/BSD-3): sampling, statistics, the bad files it refuses with a reason, tensors, encoder and wire."""

from __future__ import annotations

import base64
import re
import struct

import numpy as np
import pytest

from mmops.datasets.sources import debian_file
from mmops.errors import BadInputError
from mmops.modalities.registry import kind_of, parse_spec
from mmops.modalities.video import VideoKind, VideoSpec, decode_video
from mmops.modalities.video.decode import encode_clip

SPEC = VideoSpec(name="cam", fps=2.0, frames=8, size=(48, 64), max_seconds=120.0)


@pytest.fixture(scope="module")
def vtest() -> bytes:
    return debian_file("opencv-doc", "usr/share/doc/opencv-doc/examples/data/vtest.avi").read_bytes()


def test_the_kind_is_registered_and_a_pack_can_declare_it() -> None:
    spec = parse_spec({"name": "cam", "kind": "video", "fps": 1.0, "frames": 4})
    assert isinstance(spec, VideoSpec) and isinstance(kind_of(spec), VideoKind)


def test_a_real_clip_is_sampled_at_the_packs_rate_with_its_statistics(vtest: bytes) -> None:
    out = decode_video(vtest, SPEC)
    clip = out.value
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.times == (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)  # every 1/fps s of the 10 fps source
    s = out.stats
    assert (s["fps"], s["width"], s["height"], s["frame_count"], s["duration_s"]) == (10.0, 768.0, 576.0, 795.0, 79.5)
    assert 0.2 < s["brightness"] < 0.8 and s["black_share"] == 0 and s["frozen_share"] == 0
    assert s["motion"] > 0.002 and s["blur"] > 100  # people walk; the camera is in focus
    again = decode_video(encode_clip(clip.frames, 2.0), SPEC)  # our own MP4 of the frames decodes the same
    assert again.value.frames.shape == clip.frames.shape
    assert np.abs(again.value.frames.astype(int) - clip.frames.astype(int)).mean() < 12


def test_a_frozen_or_black_camera_shows_in_the_statistics(vtest: bytes) -> None:
    frames = decode_video(vtest, SPEC).value.frames
    frozen = decode_video(encode_clip(np.repeat(frames[:1], 8, axis=0), 2.0), SPEC).stats
    black = decode_video(encode_clip(np.zeros_like(frames), 2.0), SPEC).stats
    assert frozen["frozen_share"] == 1.0 and frozen["motion"] < 0.002
    assert black["black_share"] == 1.0
    gate = {e[1]["column"]: e[2] for e in VideoKind().expectations(SPEC)}
    assert gate["black_share"] == "critical" and gate["frozen_share"] == "warning"


def _avi_main_header(data: bytes, **fields: int) -> bytes:
    """vtest.avi with its main header's fields replaced (frames, width, height)."""
    at = data.find(b"avih") + 8
    values = list(struct.unpack("<10I", data[at:at + 40]))
    for name, value in fields.items():
        values[{"frames": 4, "width": 8, "height": 9}[name]] = value
    return data[:at] + struct.pack("<10I", *values) + data[at + 40:]


@pytest.mark.parametrize(("make", "reason"), [
    (lambda v: v[:100_000], "cut off: its header declares 795 frames, 3 decode"),  # a truncated container
    (lambda v: v[:v.find(b"movi") + 4], "no frames that decode"),  # the header and no frames
    (lambda v: _avi_main_header(v, width=100_000, height=100_000), "claims 100000x100000 frames, over the pixel"),
    (lambda v: _avi_main_header(v, frames=10**7), "claims 1,000,000 s, over the limit of 120 s"),
    (lambda v: v.replace(b"div3", b"zzzz"), "no decoder for this video's codec (zzzz)"),  # FFmpeg has none
    (lambda v: b"%PDF-1.4 not a video" * 50, "not a readable video file (invalid data"),
    (lambda v: debian_file("alsa-utils", "usr/share/sounds/alsa/Noise.wav").read_bytes(), "no video stream"),
    (lambda v: b"", "empty file"),
])
def test_bad_video_files_are_refused_with_a_reason(vtest: bytes, make, reason: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(reason)):
        decode_video(make(vtest), SPEC)


def test_tensors_pad_a_short_clip_and_the_encoder_pools_only_its_frames(vtest: bytes) -> None:
    import torch

    kind = VideoKind()
    short = decode_video(encode_clip(decode_video(vtest, SPEC).value.frames[:3], 2.0), SPEC).value
    t = kind.tensor(short, SPEC, {}, {})
    assert t.shape == (8, 3, 48, 64) == kind.empty(SPEC).shape and kind.length(short, SPEC) == 3
    assert np.all(t[3:] == 0) and 0 < t[:3].mean() < 1
    enc = kind.encoder(SPEC, {"image_encoder": "resnet"}, pretrained=False)
    assert enc.takes_lengths and enc.source is None
    net = enc.backbone.eval()
    x = torch.from_numpy(t)[None]
    noisy = x.clone()
    noisy[:, 3:] = torch.rand_like(noisy[:, 3:])
    with torch.no_grad():
        a, b = net(x, torch.tensor([3])), net(noisy, torch.tensor([3]))
    assert a.shape == (1, net.out_dim) and torch.allclose(a, b, atol=1e-5)


def test_the_wire_takes_a_base64_clip_and_the_answer_names_the_frames(vtest: bytes) -> None:
    kind = VideoKind()
    raw = base64.b64encode(vtest).decode()
    clip = kind.from_wire(raw, SPEC)
    assert kind.warnings(SPEC, clip, raw) == ["cam: frames at 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5 s of 79.5 s"]
    assert kind.to_file(raw, SPEC) == (vtest, ".avi")
    for bad, why in ((7, "base64 string"), ("@@", "not valid base64"),
                     (base64.b64encode(b"nothing").decode(), "not a readable video")):
        with pytest.raises(BadInputError, match=why):
            kind.from_wire(bad, SPEC)
    original = encode_clip(clip.frames, 2.0)
    before = decode_video(original, SPEC).stats
    after = decode_video(base64.b64decode(kind.shift(base64.b64encode(original).decode(), SPEC)), SPEC).stats
    assert after["brightness"] < 0.6 * before["brightness"] and after["blur"] < before["blur"]
    assert {k: after[k] for k in ("fps", "frame_count", "width", "height")} == \
        {k: before[k] for k in ("fps", "frame_count", "width", "height")}  # only the picture changes
