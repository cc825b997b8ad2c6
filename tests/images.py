"""Image bytes for tests: real encoders (Pillow), plus hand-built headers that real encoders refuse to write."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encoded(seed: int, w: int, h: int, channels: int = 1, fmt: str = "PNG") -> bytes:
    """Random pixels, w x h, grayscale (1) or RGB (3), encoded as PNG or JPEG."""
    shape = (h, w) if channels == 1 else (h, w, channels)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def png_header_claiming(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h (valid CRC) followed by a tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")
