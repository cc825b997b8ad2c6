"""The audio kind on real recordings (alsa-utils' spoken phrases, pygame's sound effects): every format it
reads, the bad files it refuses with a reason, its front end against librosa, its encoder, wire and shift."""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pytest
import soundfile as sf

from mmops.datasets.sources import debian_file, package_file
from mmops.errors import BadInputError
from mmops.modalities.audio import AudioKind, AudioSpec, decode_audio
from mmops.modalities.audio.features import frame_sizes, log_mel, mel_filterbank, mfcc
from mmops.modalities.registry import kind_of, parse_spec

SPEC = AudioSpec(name="mic", max_seconds=30.0)


def speech() -> bytes:
    """A real spoken phrase: 48 kHz, 16-bit PCM (alsa-utils, GPL-2)."""
    return debian_file("alsa-utils", "usr/share/sounds/alsa/Front_Center.wav").read_bytes()


def effect(name: str) -> bytes:
    """A real sound effect of pygame's examples (11025 Hz; LGPL)."""
    return package_file("pygame", f"pygame/examples/data/{name}").read_bytes()


def _encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_the_kind_is_registered_and_a_pack_can_declare_it() -> None:
    spec = parse_spec({"name": "mic", "kind": "audio", "sample_rate_hz": 8000})
    assert isinstance(spec, AudioSpec) and isinstance(kind_of(spec), AudioKind)
    with pytest.raises(ValueError, match="min_seconds <= clip_seconds"):
        parse_spec({"name": "mic", "kind": "audio", "clip_seconds": 1000.0, "max_seconds": 10.0})


@pytest.mark.parametrize(("name", "codec"), [
    ("house_lo.wav", "PCM_U8"), ("secosmic_lo.wav", "MS_ADPCM"), ("house_lo.ogg", "VORBIS"),
    ("house_lo.mp3", "MPEG_LAYER_III")])
def test_every_format_of_real_files_decodes_to_mono_at_the_packs_rate(name: str, codec: str) -> None:
    data = effect(name)
    assert sf.info(io.BytesIO(data)).subtype == codec  # the file really is what the case says
    out = decode_audio(data, SPEC)
    assert out.value.dtype == np.float32 and out.value.ndim == 1
    assert out.stats["source_rate_hz"] == 11025 and out.stats["sample_rate_hz"] == 16000
    assert out.stats["duration_s"] == pytest.approx(sf.info(io.BytesIO(data)).duration, abs=0.05)
    assert -60 < out.stats["rms_dbfs"] < 0 and out.stats["silence_share"] < 0.5


def test_16_24_32_bit_float_and_flac_of_the_same_speech_agree() -> None:
    x, rate = sf.read(io.BytesIO(speech()), dtype="float64")
    assert rate == 48000
    ref = decode_audio(speech(), SPEC)
    for fmt, subtype in (("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"), ("FLAC", "PCM_16")):
        got = decode_audio(_encode(x, rate, fmt, subtype), SPEC)
        np.testing.assert_allclose(got.value, ref.value, atol=2e-4, err_msg=f"{fmt} {subtype}")
    assert ref.stats["duration_s"] == pytest.approx(len(x) / rate, abs=1e-3) and ref.stats["channels"] == 1


def test_stereo_is_mixed_down_and_says_so_and_nan_samples_are_counted() -> None:
    x, rate = sf.read(io.BytesIO(speech()), dtype="float32")
    stereo = decode_audio(_encode(np.stack([x, 0.5 * x], axis=1), rate, "WAV", "FLOAT"), SPEC)
    mono = decode_audio(speech(), SPEC)
    assert stereo.stats["channels"] == 2 and stereo.stats["downmixed"] == 1 and mono.stats["downmixed"] == 0
    np.testing.assert_allclose(stereo.value, 0.75 * mono.value, atol=2e-4)
    broken = x.copy()
    broken[:100] = np.nan
    out = decode_audio(_encode(broken, rate, "WAV", "FLOAT"), SPEC)
    assert out.stats["nonfinite_share"] == pytest.approx(100 / len(x)) and np.isfinite(out.value).all()
    nonfinite = [e for e in AudioKind().expectations(SPEC) if e[1]["column"] == "nonfinite_share"]
    assert nonfinite == [("ExpectColumnValuesToBeBetween", {"column": "nonfinite_share", "max_value": 0.0},
                          "critical")]


def _wav_header_claiming(frames: int, rate: int = 48000) -> bytes:
    """A PCM WAV header whose data chunk claims `frames` 16-bit samples, followed by one second of them."""
    body = speech()[44:44 + 2 * rate]
    return (b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
            2 * rate, 2, 16) + b"data" + struct.pack("<I", min(2 * frames, 0xFFFFFFFF)) + body)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda: speech()[:30], "not a readable audio file"),  # the header cut off
    (lambda: _encode(np.zeros(0, np.float32), 48000, "WAV", "PCM_16"), "no frames"),  # a header, no samples
    (lambda: speech()[:44], "cut off: its header claims 1.43 s, the file holds 0.00 s"),
    (lambda: _wav_header_claiming(48000 * 3600 * 2), "claims 7,200 s, over the limit of 30 s"),
    (lambda: speech()[:len(speech()) // 2], "cut off: its header claims 1.43 s, the file holds 0.71 s"),
    (lambda: speech()[:24] + struct.pack("<I", 0) + speech()[28:], "sample rate of 0 Hz"),
    (lambda: speech()[:20] + struct.pack("<H", 0x7777) + speech()[22:], "not a readable audio file"),  # codec
    (lambda: b"%PDF-1.4 not audio at all" * 40, "not a readable audio file"),  # a document named .wav
    (lambda: b"", "empty file"),
])
def test_bad_audio_files_are_refused_with_a_reason(make, reason: str) -> None:
    with pytest.raises(BadInputError, match=reason):
        decode_audio(make(), SPEC)


def test_the_log_mel_and_mfcc_front_end_match_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    import torch

    x = decode_audio(speech(), SPEC).value
    n_fft, win, hop = frame_sizes(16000)
    assert (n_fft, win, hop) == (512, 400, 160)
    np.testing.assert_allclose(mel_filterbank(16000, 512, 64),
                               librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, htk=True, norm="slaney"), atol=1e-7)
    ref_power = librosa.feature.melspectrogram(y=x.astype(np.float64), sr=16000, n_fft=512, hop_length=160,
                                               win_length=400, window="hann", center=True, pad_mode="constant",
                                               power=2.0, n_mels=64, htk=True, norm="slaney")
    ref_db = librosa.power_to_db(ref_power, ref=1.0, amin=1e-10, top_db=None)
    ours = log_mel(torch.from_numpy(x.astype(np.float64)), 16000).numpy()
    assert ours.shape == ref_db.shape
    assert np.abs(ours - ref_db).max() < 1e-3  # dB
    ref_mfcc = librosa.feature.mfcc(S=ref_db, n_mfcc=13, dct_type=2, norm="ortho")
    assert np.abs(mfcc(torch.from_numpy(x.astype(np.float64)), 16000).numpy() - ref_mfcc).max() < 1e-3


def test_tensors_are_standardised_padded_and_masked_and_the_encoder_ignores_the_padding() -> None:
    import torch

    kind, spec = AudioKind(), AudioSpec(name="mic", clip_seconds=2.0)
    short = decode_audio(speech(), spec).value  # 1.43 s
    fitted = kind.fit(spec, [short, decode_audio(effect("house_lo.ogg"), spec).value])
    t = kind.tensor(short, spec, fitted, {})
    length = kind.length(short, spec)
    assert t.shape == (1, 64, spec.frames) == kind.empty(spec).shape and length < spec.frames
    assert np.all(t[:, :, length:] == 0) and abs(float(t[:, :, :length].mean())) < 1.5
    enc = kind.encoder(spec, {}, pretrained=False)
    assert enc.takes_lengths and enc.source is None
    net = enc.backbone.eval()
    x = torch.from_numpy(t)[None]
    noisy = x.clone()
    noisy[..., length:] = torch.randn_like(noisy[..., length:]) * 5  # whatever sits in the padding
    with torch.no_grad():
        a, b = net(x, torch.tensor([length])), net(noisy, torch.tensor([length]))
    assert a.shape == (1, net.out_dim) and torch.allclose(a, b, atol=1e-5)


def test_the_wire_takes_base64_audio_and_refuses_what_it_cannot_hear() -> None:
    kind = AudioKind()
    raw = base64.b64encode(speech()).decode()
    assert kind.from_wire(raw, SPEC).shape == decode_audio(speech(), SPEC).value.shape
    data, suffix = kind.to_file(raw, SPEC)
    assert data == speech() and suffix == ".wav" and kind.to_file(base64.b64encode(effect("house_lo.ogg")).decode(),
                                                                  SPEC)[1] == ".ogg"
    for bad, reason in ((123, "base64 string"), ("%%%", "not valid base64"),
                        (base64.b64encode(b"not audio" * 20).decode(), "not a readable audio file"),
                        (base64.b64encode(_wav_header_claiming(48000 * 60)).decode(), "over the limit")):
        with pytest.raises(BadInputError, match=reason):
            kind.from_wire(bad, SPEC)
    long = AudioSpec(name="mic", clip_seconds=1.0)
    assert kind.warnings(long, kind.from_wire(raw, long), raw) == ["mic: 1.43 s, the model hears the first 1 s"]


def test_the_field_shift_is_quieter_duller_and_noisier() -> None:
    kind = AudioKind()
    raw = base64.b64encode(speech()).decode()
    before, after = decode_audio(speech(), SPEC).stats, decode_audio(base64.b64decode(kind.shift(raw, SPEC)), SPEC).stats
    assert after["rms_dbfs"] < before["rms_dbfs"] - 3  # the level halved, the filter takes more
    assert after["silence_share"] < before["silence_share"]  # noise fills the pauses
    assert kind.shift(raw, SPEC) == kind.shift(raw, SPEC)  # the same shift each time (seeded noise)


def test_silero_finds_the_speech_in_a_real_phrase_and_none_in_real_noise() -> None:
    spec = AudioSpec(name="mic", speech_detector="silero", min_speech_share=0.3)
    phrase = decode_audio(speech(), spec).stats["speech_share"]
    noise = decode_audio(debian_file("alsa-utils", "usr/share/sounds/alsa/Noise.wav").read_bytes(), spec)
    assert phrase > 0.5 and noise.stats["speech_share"] < 0.05
    assert AudioKind().stats(noise.value, spec)["speech_share"] == noise.stats["speech_share"]  # served = ingested
    assert ("ExpectColumnValuesToBeBetween", {"column": "speech_share", "min_value": 0.3, "mostly": 0.9},
            "warning") in AudioKind().expectations(spec)
    assert "speech_share" not in decode_audio(speech(), SPEC).stats  # off unless a pack asks
    with pytest.raises(ValueError, match="min_speech_share needs speech_detector"):
        parse_spec({"name": "mic", "kind": "audio", "min_speech_share": 0.2})


def test_the_one_call_sequence_detector_marks_what_silero_s_streaming_model_marks() -> None:
    """speech_share runs silero-vad's sequence model (one ONNX call per clip); on the real recordings its
    speech segments are exactly those of the package's reference streaming model (TorchScript, window by window)."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    from mmops.datasets import scenes
    from mmops.modalities.audio.speech import VAD_RATE, speech_share

    room, voices, impacts = scenes.sounds()
    streaming = load_silero_vad()
    found = 0
    for clip in [room[:4 * VAD_RATE], *voices, *impacts]:
        x = np.ascontiguousarray(clip, dtype=np.float32)
        stamps = get_speech_timestamps(torch.from_numpy(x), streaming, sampling_rate=VAD_RATE)
        assert speech_share(x, VAD_RATE) == pytest.approx(sum(s["end"] - s["start"] for s in stamps) / len(x), abs=0)
        found += bool(stamps)
    assert found == len(voices)  # every phrase has speech, the room noise and the impacts none


def test_a_served_file_has_the_statistics_it_had_at_ingest_and_reading_it_runs_no_detector(monkeypatch) -> None:
    """The monitor compares what the service logs (the kind's `stats` of the value it read) with what ingest
    recorded: for the same file they agree. Training and serving read files again without the statistics,
    so the speech detector runs once per file at ingest and once per served record, never more."""
    import mmops.modalities.audio.speech as speech_module
    from mmops.modalities import read_value

    spec = AudioSpec(name="mic", speech_detector="silero")
    kind = AudioKind()
    for data in (speech(), effect("house_lo.mp3"), effect("secosmic_lo.wav")):  # 48 kHz and 11 kHz sources
        ingested = decode_audio(data, spec).stats
        served = kind.stats(kind.from_wire(base64.b64encode(data).decode(), spec), spec)
        assert served == {k: v for k, v in ingested.items() if k in served}
        assert set(ingested) - set(served) == {"source_rate_hz", "channels", "downmixed", "nonfinite_share"}
    calls = []
    real = speech_module.speech_share
    monkeypatch.setattr(speech_module, "speech_share", lambda *a: calls.append(1) or real(*a))
    np.testing.assert_array_equal(read_value(speech(), spec), decode_audio(speech(), spec).value)
    kind.from_wire(base64.b64encode(speech()).decode(), spec)
    assert len(calls) == 1  # decode_audio's, at "ingest"; read_value and from_wire ran none
