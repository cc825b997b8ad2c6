"""Images (DICOM, fundus, camera): PNG/JPEG (verified, then decoded; EXIF orientation applied) or DICOM
(rescaled and windowed, de-identified at ingest). The model reads a (channels x height x width) float array in
[0, 1] at the spec's size."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mmops.errors import BadInputError
from mmops.modalities.base import (
    Decoded,
    Encoder,
    Expectation,
    ModalityKind,
    ModalitySpec,
    file_from_wire,
    per_shape,
)
from mmops.phi import deidentify_dicom, is_dicom, read_dicom, write_dicom

MAX_IMAGE_B64_CHARS = 8 * 1024 * 1024  # an image in a request, base64


class ImageSpec(ModalitySpec):
    kind: Literal["image"] = "image"
    size: tuple[int, int] = (32, 32)  # (height, width) the model sees
    channels: Literal[1, 3] = 3
    max_pixels: int = 4096 * 4096  # decompression-bomb guard (the header is checked before decoding)
    min_side: int = Field(8, ge=1)  # smaller images are rejected, not upscaled into noise
    # DICOM images without a window in their tags use this one (center, width), in rescaled units (e.g. HU)
    window: tuple[float, float] | None = None
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm")


def decode_image(data: bytes, spec: ImageSpec, phi_key: bytes | None = None) -> Decoded:
    """PNG/JPEG (verified, then fully decoded; EXIF orientation applied) or DICOM (rescaled and windowed)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadInputError("empty file")
    if is_dicom(data):
        return _decode_dicom_image(data, spec, phi_key)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size  # from the header, before any pixel is decoded
            if w * h > spec.max_pixels:
                raise BadInputError(f"image header claims {w}x{h}, over the pixel limit ({spec.max_pixels})")
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = _to_uint8(ImageOps.exif_transpose(img), spec.channels)
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses at open, before our own check, beyond twice its global limit; the limit that
        # applies is the pack's, so that is the one the reason names (the service says the same)
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed[1]):,} pixels" if claimed else "a size"
        raise BadInputError(f"image header claims {size}, over the pixel limit ({spec.max_pixels}; "
                            "decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise BadInputError("not a readable image: no image format recognised in its bytes") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError(f"not a readable image: {exc}") from None
    return _checked_image(arr, spec)


def _to_uint8(img: Any, channels: int) -> np.ndarray:
    """Mode policy: 16-bit and float grayscale are scaled to 8 bits by their range; palette, alpha and
    CMYK images are converted; the result is grayscale or RGB as the spec asks."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raw = np.asarray(img, dtype=np.float64)
        lo, hi = float(raw.min()), float(raw.max())
        gray = np.zeros(raw.shape, np.uint8) if hi <= lo else ((raw - lo) / (hi - lo) * 255).round().astype(np.uint8)
        from PIL import Image

        img = Image.fromarray(gray, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")  # alpha over black, explicitly, rather than whatever convert() picks
    return np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)


def _checked_image(arr: np.ndarray, spec: ImageSpec, stored: bytes | None = None,
                   notes: dict[str, int] | None = None) -> Decoded:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if min(arr.shape[:2]) < spec.min_side:
        raise BadInputError(f"image is {arr.shape[1]}x{arr.shape[0]}, smaller than {spec.min_side} pixels a side")
    return Decoded(arr, image_stats(arr), stored, notes or {})


def _decode_dicom_image(data: bytes, spec: ImageSpec, phi_key: bytes | None) -> Decoded:
    ds = read_dicom(data)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * cols > spec.max_pixels:
        raise BadInputError(f"DICOM image is {cols}x{rows}, over the pixel limit ({spec.max_pixels})")
    if "PixelData" not in ds:
        raise BadInputError("DICOM file has no pixel data (is it an image?)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for truncated or compressed-without-codec data
        raise BadInputError(f"DICOM pixel data cannot be decoded: {exc}") from None
    if pixels.ndim == 3 and pixels.shape[-1] != 3:  # multi-frame: the middle frame represents the series
        pixels = pixels[pixels.shape[0] // 2]
    if pixels.ndim == 3:
        arr = pixels.astype(np.uint8) if pixels.dtype == np.uint8 else _window(pixels.mean(axis=2), None)
        if spec.channels == 1:
            arr = arr.mean(axis=2).round().astype(np.uint8) if arr.ndim == 3 else arr
    else:
        values = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
            ds.get("RescaleIntercept", 0) or 0)
        arr = _window(values, _dicom_window(ds) or spec.window)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            arr = 255 - arr
        if spec.channels == 3:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
    stored, notes = None, {}
    if phi_key is not None:
        notes = {f"phi_{k}": v for k, v in deidentify_dicom(ds, phi_key).items() if v}
        stored = write_dicom(ds)
    return _checked_image(arr, spec, stored, notes)


def _dicom_window(ds: Any) -> tuple[float, float] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    return _first(center), _first(width)


def _first(value: Any) -> float:
    """A DICOM numeric attribute may hold several values (several windows): the first one counts."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return float(value[0])
    return float(value)


def _window(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Linear VOI window (center, width) to uint8; the value range when there is no window."""
    if window is None:
        lo, hi = float(values.min()), float(values.max())
    else:
        center, width = window
        lo, hi = center - width / 2, center + width / 2
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return (np.clip((values - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def image_stats(arr: np.ndarray) -> dict[str, float]:
    return image_stats_many([arr])[0]


def image_stats_many(images: list[np.ndarray]) -> list[dict[str, float]]:
    """`image_stats` of each image; images of one shape are stacked and reduced at once (the prediction log's
    writer computes them for every served record), each figure over each image's own pixels, as it is alone
    (the same float32 arithmetic, in the same order: the same figures to the last bit)."""

    def figures(x: np.ndarray) -> list[dict[str, float]]:  # (n, h, w, c)
        h, w = x.shape[1:3]
        gray = x.astype(np.float32).mean(axis=3) / 255.0
        gy, gx = np.gradient(gray, axis=(1, 2)) if min(h, w) > 1 else (np.zeros_like(gray), np.zeros_like(gray))
        pixels = (1, 2)
        blur = _laplacian(gray * 255.0).var(axis=pixels) if min(h, w) >= 3 else np.zeros(len(x))
        return [{"height": float(h), "width": float(w), "brightness": float(bright), "contrast": float(contrast),
                 "sharpness": float(sharpness), "blur": float(lap_var)}
                for bright, contrast, sharpness, lap_var in zip(
                    gray.mean(axis=pixels), gray.std(axis=pixels), np.sqrt(gx**2 + gy**2).mean(axis=pixels), blur,
                    strict=True)]

    return per_shape(images, figures)


def _laplacian(gray: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of an image's (or a stack's: the last two axes) inner pixels."""
    return (gray[..., :-2, 1:-1] + gray[..., 2:, 1:-1] + gray[..., 1:-1, :-2] + gray[..., 1:-1, 2:]) \
        - 4.0 * gray[..., 1:-1, 1:-1]


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (in grey levels): low means out of focus or featureless."""
    if min(gray.shape) < 3:
        return 0.0
    return float(_laplacian(gray).var())


def image_tensor(arr: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """HxWxC uint8 -> CxHxW float32 in [0, 1], resized to the spec."""
    from PIL import Image

    h, w = spec.size
    if arr.shape[0] != h or arr.shape[1] != w:
        mode = "L" if arr.shape[2] == 1 else "RGB"
        img = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=mode)
        arr = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))
        arr = arr[:, :, None] if arr.ndim == 2 else arr
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / 255.0


def png_bytes(pixels: np.ndarray) -> bytes:
    """Deterministic PNG (no timestamps or text chunks) from uint8 HxW or HxWx3."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=9, optimize=False)
    return buf.getvalue()


def shift_image(b64: str, brightness: float = 0.45, blur_radius: float = 1.5) -> str:
    """A darker site and a defocused lens: brightness down, Gaussian blur (base64 in, base64 PNG out)."""
    from PIL import Image, ImageEnhance, ImageFilter

    src = Image.open(io.BytesIO(base64.b64decode(b64)))
    img: Image.Image = src.convert("RGB" if src.mode not in ("L", "RGB") else src.mode)
    out = ImageEnhance.Brightness(img).enhance(brightness).filter(ImageFilter.GaussianBlur(blur_radius))
    return base64.b64encode(png_bytes(np.asarray(out))).decode("ascii")


_BLANK_PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgAB"
              "SK+kcQAAAABJRU5ErkJggg==")


class ImageKind(ModalityKind):
    name = "image"
    nudge_says = "5 % less light"
    spec = ImageSpec
    channels_last = True

    def decode(self, data: bytes, spec: ImageSpec, phi_key: bytes | None = None) -> Decoded:
        return decode_image(data, spec, phi_key)

    def stats(self, value: np.ndarray, spec: ImageSpec) -> dict[str, float]:
        return image_stats(value)

    def stats_many(self, values: list[np.ndarray], spec: ImageSpec) -> list[dict[str, float]]:
        return image_stats_many(values)

    def expectations(self, spec: ImageSpec) -> list[Expectation]:
        return [
            *[("ExpectColumnValuesToBeBetween", {"column": col, "min_value": spec.min_side}, "critical")
              for col in ("height", "width")],
            ("ExpectColumnValuesToBeBetween", {"column": "brightness", "min_value": 0.0, "max_value": 1.0},
             "critical"),
            # A blank (constant) frame is a dead camera, not data.
            ("ExpectColumnValuesToBeBetween", {"column": "contrast", "min_value": 0.005, "mostly": 0.95}, "critical"),
            ("ExpectColumnMeanToBeBetween", {"column": "brightness", "min_value": 0.05, "max_value": 0.95}, "warning"),
            # out of focus: variance of the Laplacian near zero
            ("ExpectColumnValuesToBeBetween", {"column": "blur", "min_value": 1.0, "mostly": 0.95}, "warning"),
            ("ExpectColumnValuesToBeUnique", {"column": "sha256", "mostly": 0.8}, "warning"),
        ]

    def tensor(self, value: np.ndarray, spec: ImageSpec, fitted: Mapping[str, Any],
               options: Mapping[str, str]) -> np.ndarray:
        return image_tensor(value, spec)

    def empty(self, spec: ImageSpec) -> np.ndarray:
        return np.zeros((spec.channels, *spec.size), dtype=np.float32)

    def arch(self, params: Any) -> dict[str, Any]:
        return {"image_encoder": params.image_encoder, "image_size": params.image_size}

    def encoder(self, spec: ImageSpec, arch: Mapping[str, Any], pretrained: bool) -> Encoder:
        from mmops.models.image import PRETRAINED_IMAGE, image_backbone

        name = str(arch.get("image_encoder", "resnet"))
        backbone = image_backbone(name, spec.channels, int(arch.get("image_size", 64)), pretrained)
        return Encoder(backbone, f"imagenet:{name}" if name in PRETRAINED_IMAGE else None)

    def wire_schema(self, spec: ImageSpec) -> dict[str, Any]:
        return {"type": "string", "format": "byte", "maxLength": MAX_IMAGE_B64_CHARS,
                "description": f"base64 of a PNG/JPEG/DICOM image (the model sees {spec.size[0]}x{spec.size[1]})"}

    def from_wire(self, raw: Any, spec: ImageSpec) -> np.ndarray:
        return decode_image(file_from_wire(raw, MAX_IMAGE_B64_CHARS, "an image"), spec).value

    def to_wire(self, data: bytes, value: np.ndarray, spec: ImageSpec) -> Any:
        return base64.b64encode(data).decode("ascii")  # the image's own bytes

    def to_file(self, value: Any, spec: ImageSpec) -> tuple[bytes, str]:
        data = base64.b64decode(value, validate=True)
        return data, ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png"

    shift_note = "images darker and blurred"

    def shift(self, raw: Any, spec: ImageSpec) -> Any:
        return shift_image(raw)

    def nudge(self, raw: Any, spec: ImageSpec) -> Any:
        return shift_image(raw, brightness=0.95, blur_radius=0.0)  # 5 % less light, in focus

    def labelstudio_tag(self, spec: ImageSpec) -> str:
        from xml.sax.saxutils import quoteattr

        return f'<Image name={quoteattr(spec.name)} value="${spec.name}" zoom="true"/>'

    def labelstudio_value(self, spec: ImageSpec, value: Any) -> Any:
        from PIL import Image

        arr = np.asarray(value)
        buf = io.BytesIO()
        Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    def labelstudio_placeholder(self, spec: ImageSpec) -> Any:
        return _BLANK_PNG
