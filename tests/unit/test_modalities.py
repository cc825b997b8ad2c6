import io

import numpy as np
import pytest
from PIL import Image

from mmops.errors import BadInputError
from mmops.modalities import decode
from mmops.modalities.image import ImageSpec
from mmops.modalities.sensor import SensorSpec
from mmops.modalities.text import TextSpec, text_tensor
from tests.images import encoded, png_header_claiming

IMG = ImageSpec(name="cam", size=(16, 16), channels=3, max_pixels=4000 * 4000)
SENSOR = SensorSpec(name="imu", channels=("x", "y"), length=10, sample_rate_hz=10)
TEXT = TextSpec(name="note", max_chars=100)


def png(w: int = 20, h: int = 10) -> bytes:
    return encoded(0, w, h, channels=3)


def test_good_image_decodes_with_stats() -> None:
    dec = decode(png(), IMG)
    assert dec.value.shape == (10, 20, 3)
    assert dec.stats["width"] == 20 and 0 < dec.stats["brightness"] < 1


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (png()[:60], "not a readable image"),
    (b"hello, I am text saved as .png", "not a readable image"),
    (png_header_claiming(50000, 50000), "over the pixel limit"),
    (png_header_claiming(5000, 5000), "over the pixel limit"),  # under Pillow's limit, over ours
])
def test_bad_images_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadInputError, match=reason):
        decode(data, IMG)


@pytest.mark.parametrize("w,h", [(50000, 50000), (5000, 5000)])  # over Pillow's own limit; under it
def test_a_bomb_is_refused_naming_the_packs_limit_not_pillows(w: int, h: int) -> None:
    with pytest.raises(BadInputError) as exc:
        decode(png_header_claiming(w, h), IMG)
    assert f"({IMG.max_pixels}" in str(exc.value) and "178956970" not in str(exc.value)
    assert f"{w * h:,}" in str(exc.value) or f"{w}x{h}" in str(exc.value)


def test_good_sensor_csv() -> None:
    dec = decode(b"timestamp,x,y\n0.0,1,2\n0.1,3,4\n0.2,5,6\n", SENSOR)
    assert dec.value.shape == (3, 2)
    assert dec.stats["x_mean"] == pytest.approx(3.0)


@pytest.mark.parametrize("csv,reason", [
    (b"timestamp,x\n0,1\n1,2\n", "columns"),
    (b"timestamp,x,y,z\n0,1,2,3\n1,2,3,4\n", "columns"),
    (b"timestamp,x,y\n0,1,2\n1,oops,3\n", "non-numeric"),
    (b"timestamp,x,y\n0,1,2\n1,nan,3\n", "NaN"),
    (b"timestamp,x,y\n0,1,2\n1,inf,3\n", "NaN or infinite"),
    (b"timestamp,x,y\n0,1,2\n0,2,3\n", "strictly increasing"),
    (b"timestamp,x,y\n0,1,2\n1,2\n", "fields"),
    (b"timestamp,x,y\n0,1,2\n", "1 samples"),
    (b"timestamp,x,y\n0,1,\xff\n1,2,3\n", "UTF-8"),
])
def test_bad_sensor_csv(csv: bytes, reason: str) -> None:
    with pytest.raises(BadInputError, match=reason):
        decode(csv, SENSOR)


def test_text_encodings() -> None:
    assert decode("\ufeffNo acute disease.".encode(), TEXT).value == "No acute disease."  # BOM tolerated
    with pytest.raises(BadInputError, match="UTF-8"):
        decode("Befund: unauffällig".encode("latin-1"), TEXT)
    with pytest.raises(BadInputError, match="over the"):
        decode(b"x" * 101, TEXT)
    with pytest.raises(BadInputError, match="empty"):
        decode(b"   \n", TEXT)


def test_text_ids_are_stable_and_padded() -> None:
    a, b = text_tensor("Heart size normal.", TEXT), text_tensor("heart SIZE normal", TEXT)
    assert (a == b).all() and a.shape == (TEXT.max_tokens,) and (a[3:] == 0).all() and (a[:3] > 0).all()


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :5] = 255  # a bright left edge, 20 wide x 10 high
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # the camera says: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    out = decode(buf.getvalue(), IMG).value
    assert out.shape == (20, 10, 3)  # displayed upright: 10 wide x 20 high
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the bright edge is now on top


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    raw = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 200)  # 0 .. 51000
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, "PNG")
    out = decode(buf.getvalue(), ImageSpec(name="xray", size=(16, 16), channels=1)).value[:, :, 0]
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 200


def test_parquet_sensor_and_utf16_text_when_allowed() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"timestamp": [0.0, 0.1, 0.2], "x": [1.0, 2.0, 3.0], "y": [0, 1, 2]}), buf)
    assert decode(buf.getvalue(), SENSOR).value.shape == (3, 2)
    utf16 = "Température élevée".encode("utf-16")
    with pytest.raises(BadInputError, match="UTF-16"):
        decode(utf16, TEXT)
    assert decode(utf16, TextSpec(name="note", encodings=("utf-8", "utf-16"))).value == "Température élevée"


def test_kinds_are_registered_and_a_pack_names_a_bad_one_clearly() -> None:
    import pytest
    from pydantic import ValidationError

    from mmops.domains import DomainPack
    from mmops.errors import ConfigError
    from mmops.modalities import ModalityKind, kind_of, kinds, register

    assert {"sensor", "image", "text"} <= set(kinds())
    assert kind_of(SensorSpec(name="a", channels=("x",), length=10, sample_rate_hz=1)).name == "sensor"
    pack = {"name": "p", "description": "d", "classes": ["a", "b"]}
    with pytest.raises(ValidationError, match="unknown modality kind 'sonar'; registered: .*'sensor'"):
        DomainPack.model_validate({**pack, "modalities": [{"name": "s", "kind": "sonar"}]})
    with pytest.raises(ValidationError, match="modality 'ecg' \\(sensor\\): .*length"):
        DomainPack.model_validate({**pack, "modalities": [{"name": "ecg", "kind": "sensor", "channels": ["x"],
                                                           "length": 1, "sample_rate_hz": 1}]})

    class Impostor(ModalityKind):  # another class under a bundled kind's name
        name, spec = "text", TextSpec

    with pytest.raises(ConfigError, match="registered twice"):
        register(Impostor())
    assert type(kind_of("text")).__name__ == "TextKind"


def test_a_nudge_is_small_and_a_shift_is_not() -> None:
    """The behavioural tests' nudge (mmops.shifts.nudge_record) against the field's shift, kind by kind: a
    synonym that changes no finding, 5 % more gain, 5 % less light."""
    import base64

    import numpy as np

    from mmops.modalities.image import png_bytes, shift_image
    from mmops.modalities.sensor import shift_sensor
    from mmops.modalities.text import nudge_text, shift_text

    report = "Heart size normal. Lungs are clear. No acute disease."
    assert nudge_text(report) == "Cardiac silhouette dimensions normal. Lung fields are clear. No acute disease."
    assert "No acute" in nudge_text(report) and "No acute" not in shift_text(report)  # "no acute" is a rule's
    rows = [[1.0, -2.0], [0.5, 0.0]]
    assert shift_sensor(rows, gain=1.05, offset=0.0) == [[1.05, -2.1], [0.525, 0.0]]
    img = np.full((8, 8), 200, np.uint8)
    b64 = base64.b64encode(png_bytes(img)).decode()

    def mean(b: str) -> float:
        import io

        from PIL import Image

        return float(np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))).mean())

    assert mean(shift_image(b64, brightness=0.95, blur_radius=0.0)) == 190 > mean(shift_image(b64))


def test_image_statistics_over_a_stack_equal_each_images_own() -> None:
    """image_stats_many (the prediction log's writer: a batch's images at once, stacked by shape) gives each
    image the figures it has alone, to the last bit: checked against the figures computed image by image."""
    from mmops.modalities.image import image_stats_many

    def alone(arr: np.ndarray) -> dict[str, float]:
        gray = arr.astype(np.float32).mean(axis=2) / 255.0
        gy, gx = np.gradient(gray) if min(gray.shape) > 1 else (np.zeros_like(gray), np.zeros_like(gray))
        g = gray * 255.0
        lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
        return {"height": float(arr.shape[0]), "width": float(arr.shape[1]), "brightness": float(gray.mean()),
                "contrast": float(gray.std()), "sharpness": float(np.sqrt(gx**2 + gy**2).mean()),
                "blur": float(lap.var()) if min(gray.shape) >= 3 else 0.0}

    rng = np.random.default_rng(0)
    shapes = [(64, 64, 3), (37, 53, 1), (64, 64, 3), (2, 2, 3), (1, 9, 1), (3, 3, 1), (64, 64, 3), (128, 96, 3)]
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in shapes]
    images.append(np.full((64, 64, 3), 7, np.uint8))  # a blank frame: no contrast, no edges
    figures = image_stats_many(images)
    assert figures == [alone(a) for a in images]
    assert figures[-1]["contrast"] == 0.0 and figures[-1]["blur"] == 0.0
