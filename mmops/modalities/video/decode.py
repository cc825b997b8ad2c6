"""Video files to frames sampled at the pack's rate, with their statistics.

PyAV (FFmpeg inside its wheel) opens the container. What it declares is checked before a frame is decoded: a
video stream, a frame size within the pixel limit, a duration within the limit. Frames are then decoded in
order and one is kept every 1/fps seconds (resized to the pack's working size) until the model has all it
reads; a container that ends before that, well short of the frames its header declares, is refused as cut
off.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmops.errors import BadInputError
from mmops.modalities.image import laplacian_variance

BLACK_LEVEL = 0.06  # a frame darker than this on average is black
FROZEN_LEVEL = 0.5 / 255  # consecutive sampled frames closer than this are the same picture


@dataclass(frozen=True)
class Clip:
    """Sampled frames (T, H, W, 3) uint8 at the pack's working size, the time of each in the source (s), and
    what the source was."""

    frames: np.ndarray
    times: tuple[float, ...]
    duration_s: float
    source_fps: float
    width: int
    height: int
    declared_frames: int


def _open(data: bytes) -> Any:
    import av

    if not data:
        raise BadInputError("empty file")
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"not a readable video file ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)[:200].rstrip(".").lower()


def check_avi_header(data: bytes, max_pixels: int, max_seconds: float) -> str | None:
    """What an AVI's main header declares, checked before FFmpeg reads it (which zeroes a frame size it
    will not allocate and then fails without saying why): the frame size and the duration. Returns the video
    stream's FourCC (which FFmpeg does not report for a codec it has no decoder for)."""
    if data[:4] != b"RIFF" or data[8:12] != b"AVI ":
        return None
    at = data.find(b"avih", 12, 4096)
    if at < 0 or at + 48 > len(data):
        return None
    usec, _, _, _, frames, _, _, _, width, height = struct.unpack("<10I", data[at + 8:at + 48])
    if width * height > max_pixels:
        raise BadInputError(f"video header claims {width}x{height} frames, over the pixel limit ({max_pixels})")
    if frames * usec / 1e6 > max_seconds:
        raise BadInputError(f"video header claims {frames * usec / 1e6:,.0f} s, over the limit of {max_seconds:g} s")
    vids = data.find(b"vids", at, 8192)
    return data[vids + 4:vids + 8].decode("latin-1").strip() if vids > 0 else None


def decode_clip(data: bytes, fps: float, max_frames: int, size: tuple[int, int], max_pixels: int,
                max_seconds: float) -> Clip:
    import av

    fourcc = check_avi_header(data, max_pixels, max_seconds)
    container = _open(data)
    try:
        if not container.streams.video:
            raise BadInputError("no video stream in the file (audio only, or not a video)")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:
            raise BadInputError(f"no decoder for this video's codec ({fourcc or 'unknown'}): H.264, HEVC, VP8/9, AV1, "
                                "MPEG-4 and the other codecs FFmpeg decodes are read")
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if not width or not height:
            raise BadInputError("video header gives no usable frame size (missing, or beyond what FFmpeg accepts)")
        if width * height > max_pixels:
            raise BadInputError(f"video header claims {width}x{height} frames, over the pixel limit ({max_pixels})")
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        declared = int(stream.frames or 0)
        duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                    else (container.duration or 0) / 1e6)
        if duration > max_seconds:
            raise BadInputError(f"video header claims {duration:,.0f} s, over the limit of {max_seconds:g} s")
        stream.thread_type = "AUTO"
        frames, times, decoded, last_t = _sample(container, stream, fps, max_frames, size)
    except BadInputError:
        raise
    except (av.error.FFmpegError, ValueError, MemoryError) as exc:
        raise BadInputError(f"video cannot be decoded ({_reason(exc)}; codec {stream.codec_context.name})") from None
    finally:
        container.close()
    if not frames:
        raise BadInputError("video has no frames that decode")
    if declared and decoded < 0.9 * declared and len(frames) < max_frames:
        raise BadInputError(f"video file is cut off: its header declares {declared} frames, {decoded} decode")
    return Clip(np.stack(frames), tuple(times), max(duration, last_t), rate, width, height, declared or decoded)


def _sample(container: Any, stream: Any, fps: float, max_frames: int,
            size: tuple[int, int]) -> tuple[list[np.ndarray], list[float], int, float]:
    from PIL import Image

    frames: list[np.ndarray] = []
    times: list[float] = []
    next_t, decoded, last_t = 0.0, 0, 0.0
    for frame in container.decode(stream):
        decoded += 1
        t = float(frame.time) if frame.time is not None else decoded / max(fps, 1e-9)
        last_t = t
        if t + 1e-6 >= next_t:
            img = frame.to_image().convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
            frames.append(np.asarray(img, dtype=np.uint8))
            times.append(round(t, 3))
            next_t = t + 1.0 / fps
            if len(frames) == max_frames:  # all the model reads: the rest is not decoded
                break
    return frames, times, decoded, last_t


def clip_stats(clip: Clip) -> dict[str, float]:
    """Per-clip statistics: the source (fps, size, frames, duration) and the sampled frames' brightness,
    contrast, black and frozen shares, blur and motion."""
    gray = clip.frames.astype(np.float32).mean(axis=3) / 255.0  # (T, H, W)
    means = gray.reshape(len(gray), -1).mean(axis=1)
    diffs = np.abs(np.diff(gray, axis=0)).reshape(len(gray) - 1, -1).mean(axis=1) if len(gray) > 1 else np.zeros(0)
    return {
        "fps": clip.source_fps, "width": float(clip.width), "height": float(clip.height),
        "frame_count": float(clip.declared_frames), "duration_s": clip.duration_s,
        "sampled_frames": float(len(gray)),
        "brightness": float(means.mean()), "contrast": float(gray.std()),
        "black_share": float((means < BLACK_LEVEL).mean()),
        "frozen_share": float((diffs < FROZEN_LEVEL).mean()) if len(diffs) else 0.0,
        "blur": float(np.mean([laplacian_variance(g * 255.0) for g in gray])),
        "motion": float(diffs.mean()) if len(diffs) else 0.0,
    }


def encode_clip(frames: np.ndarray, fps: float, codec: str = "mpeg4") -> bytes:
    """(T, H, W, 3) uint8 frames as an MP4 file (MPEG-4 Part 2: every FFmpeg build encodes it)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream: Any = out.add_stream(codec, rate=max(1, round(fps)))
        stream.height, stream.width = (frames.shape[1] // 2) * 2, (frames.shape[2] // 2) * 2
        stream.pix_fmt = "yuv420p"
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[: stream.height, : stream.width]),
                                               format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def suffix_of(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return ".avi"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return ".mkv"
    return ".mp4"

