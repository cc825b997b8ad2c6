"""Video (camera streams, surveillance clips): MP4, AVI, MKV, MOV or WebM read with PyAV. One clip is one
record's value: frames sampled every 1/fps seconds, resized to the pack's working size. The model reads the
first `frames` of them (fewer: padded and masked), each through an image backbone, pooled over time.

The kind is this folder: decoding and statistics (decode.py), the encoder (encoder.py), and here the spec and
everything else the platform asks of a kind.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mmops.modalities.base import (
    Decoded,
    Encoder,
    Expectation,
    ModalityKind,
    ModalitySpec,
    blend_arrays,
    file_from_wire,
)
from mmops.modalities.video.decode import Clip, clip_stats, decode_clip, encode_clip, suffix_of

MAX_VIDEO_B64_CHARS = 24 * 1024 * 1024  # a clip in a request, base64


class VideoSpec(ModalitySpec):
    kind: Literal["video"] = "video"
    fps: float = Field(2.0, gt=0, le=60)  # frames sampled per second of video
    frames: int = Field(8, ge=1, le=256)  # the most sampled frames the model reads (from the start)
    size: tuple[int, int] = (64, 64)  # (height, width) of the sampled frames
    max_pixels: int = 3840 * 2160  # of a source frame, from the header (a 4K camera at most)
    max_seconds: float = Field(600.0, gt=0)  # longer files are refused, from the header
    min_frames: int = Field(2, ge=1)  # fewer sampled frames fail the gate
    extensions: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def read_clip(data: bytes, spec: VideoSpec) -> Clip:
    return decode_clip(data, spec.fps, spec.frames, spec.size, spec.max_pixels, spec.max_seconds)


def decode_video(data: bytes, spec: VideoSpec) -> Decoded:
    clip = read_clip(data, spec)
    return Decoded(clip, clip_stats(clip))


def video_tensor(clip: Clip, spec: VideoSpec) -> np.ndarray:
    """(frames, 3, H, W) float32 in [0, 1]; frames a clip lacks are zero."""
    out = np.zeros((spec.frames, 3, *spec.size), dtype=np.float32)
    frames = clip.frames[: spec.frames]
    out[: len(frames)] = frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return out


def shift_video(b64: str, spec: VideoSpec, brightness: float = 0.45, blur: bool = True) -> str:
    """A darker scene and a softer lens: every frame of the clip darkened and box-blurred, re-encoded at its
    own rate and size (only the picture changes, not the frame rate or the frame count)."""
    data = base64.b64decode(b64)
    source = read_clip(data, spec)  # checks the file and says what it is
    every = decode_clip(data, source.source_fps, round(spec.max_seconds * source.source_fps) + 1,
                        (source.height, source.width), spec.max_pixels, spec.max_seconds)
    x = every.frames.astype(np.float32) * brightness
    if blur:
        x = (x + np.roll(x, 1, axis=1) + np.roll(x, -1, axis=1) + np.roll(x, 1, axis=2) + np.roll(x, -1, axis=2)) / 5
    return base64.b64encode(encode_clip(x.clip(0, 255).astype(np.uint8), source.source_fps)).decode("ascii")


class VideoKind(ModalityKind):
    name = "video"
    nudge_says = "5 % less light in every frame"
    spec = VideoSpec
    channels_last = False

    def decode(self, data: bytes, spec: VideoSpec, phi_key: bytes | None = None) -> Decoded:
        return decode_video(data, spec)

    def read(self, data: bytes, spec: VideoSpec) -> Clip:
        return read_clip(data, spec)

    def stats(self, value: Clip, spec: VideoSpec) -> dict[str, float]:
        return clip_stats(value)

    def expectations(self, spec: VideoSpec) -> list[Expectation]:
        return [
            ("ExpectColumnValuesToBeBetween", {"column": "sampled_frames", "min_value": spec.min_frames}, "critical"),
            ("ExpectColumnValuesToBeBetween", {"column": "fps", "min_value": 1.0, "max_value": 240.0}, "critical"),
            # a dead camera: black, or the same picture over and over
            ("ExpectColumnValuesToBeBetween", {"column": "black_share", "max_value": 0.5, "mostly": 0.95},
             "critical"),
            ("ExpectColumnValuesToBeBetween", {"column": "frozen_share", "max_value": 0.9, "mostly": 0.95},
             "warning"),
            ("ExpectColumnValuesToBeBetween", {"column": "blur", "min_value": 1.0, "mostly": 0.95}, "warning"),
            ("ExpectColumnValuesToBeUnique", {"column": "sha256", "mostly": 0.8}, "warning"),
        ]

    def tensor(self, value: Clip, spec: VideoSpec, fitted: Mapping[str, Any],
               options: Mapping[str, str]) -> np.ndarray:
        return video_tensor(value, spec)

    def empty(self, spec: VideoSpec) -> np.ndarray:
        return np.zeros((spec.frames, 3, *spec.size), dtype=np.float32)

    def length(self, value: Clip, spec: VideoSpec) -> int | None:
        return min(len(value.frames), spec.frames)

    def arch(self, params: Any) -> dict[str, Any]:
        return {"image_encoder": params.image_encoder, "image_size": params.image_size}

    def encoder(self, spec: VideoSpec, arch: Mapping[str, Any], pretrained: bool) -> Encoder:
        from mmops.modalities.video.encoder import FramePooling
        from mmops.models.image import PRETRAINED_IMAGE, image_backbone

        name = str(arch.get("image_encoder", "resnet"))
        frames = image_backbone(name, 3, int(arch.get("image_size", 64)), pretrained)
        return Encoder(FramePooling(frames), f"imagenet:{name}" if name in PRETRAINED_IMAGE and pretrained else None,
                       True)

    def freeze_epochs(self, params: Any) -> int:
        # every frame goes through the backbone, so fine-tuning it costs `frames` images' backward passes per
        # clip: a pretrained one stays frozen by default (params' train.video_freeze_epochs; a GPU affords 3)
        return int(params.video_freeze_epochs)

    def wire_schema(self, spec: VideoSpec) -> dict[str, Any]:
        return {"type": "string", "format": "byte", "maxLength": MAX_VIDEO_B64_CHARS,
                "description": f"base64 of a short clip (MP4, AVI, MKV, MOV, WebM); the model sees the first "
                               f"{spec.frames} frames sampled at {spec.fps:g} per second"}

    def from_wire(self, raw: Any, spec: VideoSpec) -> Clip:
        return read_clip(file_from_wire(raw, MAX_VIDEO_B64_CHARS, "a video file"), spec)

    def to_wire(self, data: bytes, value: Clip, spec: VideoSpec) -> Any:
        return base64.b64encode(data).decode("ascii")

    def to_file(self, value: Any, spec: VideoSpec) -> tuple[bytes, str]:
        data = base64.b64decode(value, validate=True)
        return data, suffix_of(data)

    def warnings(self, spec: VideoSpec, value: Clip, raw: Any) -> list[str]:
        used = value.times[: spec.frames]
        return [f"{spec.name}: frames at {', '.join(f'{t:g}' for t in used)} s of {value.duration_s:.1f} s"]

    shift_note = "video darker and blurred"

    def shift(self, raw: Any, spec: VideoSpec) -> Any:
        return shift_video(raw, spec)

    def blend(self, a: Clip, b: Clip, weight: float) -> Clip | None:
        from dataclasses import replace

        frames = blend_arrays(a.frames, b.frames, weight)
        return None if frames is None else replace(a, frames=frames, times=a.times[: len(frames)])

    def nudge(self, raw: Any, spec: VideoSpec) -> Any:
        return shift_video(raw, spec, brightness=0.95, blur=False)  # 5 % less light, in focus

    def labelstudio_tag(self, spec: VideoSpec) -> str:
        from xml.sax.saxutils import quoteattr

        return f'<Video name={quoteattr(spec.name)} value="${spec.name}"/>'

    def labelstudio_value(self, spec: VideoSpec, value: Clip) -> Any:
        return "data:video/mp4;base64," + base64.b64encode(encode_clip(value.frames, spec.fps)).decode()

    def labelstudio_placeholder(self, spec: VideoSpec) -> Any:
        return "data:video/mp4;base64," + base64.b64encode(
            encode_clip(np.zeros((1, 16, 16, 3), np.uint8), 1.0)).decode()
