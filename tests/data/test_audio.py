"""lib.data.audio and the extractor's --audio: features against references written here from their
definitions, the store's kinds, no-audio videos, resume, bounded memory, and the real MSR-VTT sample."""

from __future__ import annotations

import json
import os
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lib.data.audio import (
    AudioSettings,
    AudioStore,
    FbankConfig,
    PasstConfig,
    StreamingFbank,
    audio_slices,
    audio_tsv_path,
    extract_audio,
    kaldi_fbank,
    passt_mel,
    stack_audio,
    valor_slices,
)
from lib.data.extract import extract_videos
from lib.data.tsv import TSVFile
from lib.data.tsv_check import inspect_audio_tsv
from lib.data.video_write import write_tone_video

# ------------------------------------------------------------------ references, from the definitions


def kaldi_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)


def reference_banks(n_mels: int, n_fft: int, rate: float, low: float, high: float) -> np.ndarray:
    """Kaldi's triangular filters, one FFT bin at a time (n_mels, n_fft // 2 + 1; no weight at Nyquist)."""
    banks = np.zeros((n_mels, n_fft // 2 + 1))
    delta = (kaldi_mel(high) - kaldi_mel(low)) / (n_mels + 1)
    for b in range(n_mels):
        left = kaldi_mel(low) + b * delta
        center, right = left + delta, left + 2 * delta
        for i in range(n_fft // 2):
            m = kaldi_mel(rate / n_fft * i)
            banks[b, i] = max(0.0, min((m - left) / (center - left), (right - m) / (right - center)))
    return banks


def reference_kaldi_fbank(wave: np.ndarray, rate: int, n_mels: int = 64) -> np.ndarray:
    """Kaldi's compute-fbank-feats as VALOR called it, in float64: 25 ms frames every 10 ms (snip edges),
    frame mean removed, pre-emphasis 0.97 (first sample against itself), Hanning window, zero-padded to a
    power of two, power spectrum, mel filters 20 Hz..Nyquist, natural log floored at float32 epsilon."""
    x = np.asarray(wave, np.float64)
    x = x - x.mean()
    length, shift = int(rate * 0.025), int(rate * 0.010)
    n = 1 + (len(x) - length) // shift
    frames = np.stack([x[i * shift : i * shift + length] for i in range(n)])
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1)))
    n_fft = 1 << (length - 1).bit_length()
    power = np.abs(np.fft.rfft(frames, n=n_fft)) ** 2
    energies = power @ reference_banks(n_mels, n_fft, rate, 20.0, rate / 2).T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))


def reference_passt(wave: np.ndarray, c: PasstConfig) -> np.ndarray:
    """PaSST's front-end by hand: pre-emphasis, reflect-padded frames, a centred symmetric Hann window of
    win_length inside n_fft, rfft power, Kaldi mel filters fmin..fmax, log(x + 1e-5), (x + 4.5) / 5."""
    x = np.asarray(wave, np.float64)
    x = x[1:] - 0.97 * x[:-1]
    padded = np.pad(x, c.n_fft // 2, mode="reflect")
    n = 1 + (len(padded) - c.n_fft) // c.hop
    window = np.zeros(c.n_fft)
    left = (c.n_fft - c.win_length) // 2
    window[left : left + c.win_length] = 0.5 - 0.5 * np.cos(
        2 * np.pi * np.arange(c.win_length) / (c.win_length - 1)
    )
    frames = np.stack([padded[i * c.hop : i * c.hop + c.n_fft] for i in range(n)]) * window
    power = np.abs(np.fft.rfft(frames)) ** 2
    mel = reference_banks(c.n_mels, c.n_fft, c.rate, c.fmin, c.fmax) @ power.T
    return (np.log(mel + 1e-5) + 4.5) / 5


def tone_and_noise(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A tone + noise with a near-silent stretch (low-energy bins are where float32 differs most)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = (
        0.3 * np.sin(2 * np.pi * 440 * t)
        + 0.1 * np.sin(2 * np.pi * 3100 * t)
        + 0.05 * rng.standard_normal(len(t))
    )
    x[: len(x) // 4] *= 1e-3
    return (x + 0.01).astype(np.float32)


# ------------------------------------------------------------------ features


def test_kaldi_fbank_matches_the_kaldi_definition():
    x = tone_and_noise(22050, 3.0)
    ours, reference = kaldi_fbank(x, 22050), reference_kaldi_fbank(x, 22050)
    assert ours.shape == reference.shape == (299, 64)  # 1 + (66150 - 551) // 220
    assert np.abs(ours - reference).max() < 1e-3
    assert np.abs(ours - reference)[reference > -5].max() < 1e-4


def test_kaldi_fbank_matches_on_real_audio(msrvtt_sample):
    settings = AudioSettings("flac")
    meta, data = extract_audio(msrvtt_sample / "video7015.mp4", settings)
    from lib.data.audio import decode_waveform

    wave = decode_waveform(meta, data)
    ours, reference = kaldi_fbank(wave, 22050), reference_kaldi_fbank(wave, 22050)
    assert ours.shape == reference.shape and len(ours) == 1 + (len(wave) - 551) // 220
    assert np.abs(ours - reference).max() < 2e-3  # float32 against float64, in near-silent bins
    assert np.abs(ours - reference)[reference > -5].max() < 1e-4


def test_the_mean_removal_changes_nothing_so_streaming_is_exact():
    x = tone_and_noise(22050, 2.0, seed=1)
    whole = kaldi_fbank(x, 22050)
    shifted = StreamingFbank(22050)
    shifted.accept(x + 0.2)  # VALOR removed the mean; Kaldi removes each frame's mean anyway
    assert np.abs(shifted.frames(final=True) - whole).max() < 2e-3
    pieces = StreamingFbank(22050)
    parts = []
    for start in range(0, len(x), 3001):  # pieces that do not align with frames
        pieces.accept(x[start : start + 3001])
        parts.append(pieces.frames())
    parts.append(pieces.frames(final=True))
    assert np.abs(np.concatenate(parts) - whole).max() < 2e-3


def test_valor_slices_pad_pick_and_normalise():
    config = FbankConfig(n_slices=2)
    fbank = np.full((1024, 64), 1.0, np.float32)  # an exact multiple of 512: VALOR adds a padding slice
    eval_slices = valor_slices(fbank, config)
    assert eval_slices.shape == (2, 64, 512)
    # 3 slices -> segments [0, 1] and [2]: the middle picks are slices 0 and 2 (all padding)
    assert np.allclose(eval_slices[0], (1.0 - config.mean) / (2 * config.std))
    assert np.allclose(eval_slices[1], -config.mean / (2 * config.std))  # padding: +0.467, as in VALOR
    assert abs(float(eval_slices[1, 0, 0]) - 0.467) < 1e-3
    fbank = np.arange(300, dtype=np.float32)[:, None].repeat(64, 1)  # shorter than a slice, 4 wanted
    short = valor_slices(fbank, FbankConfig(n_slices=4))
    assert short.shape == (4, 64, 512) and all(np.array_equal(short[0], s) for s in short)
    long = np.random.default_rng(0).standard_normal((512 * 7 + 5, 64)).astype(np.float32)  # 8 slices
    candidates = [raw_slice(long, i) for i in range(8)]
    seen = set()
    for seed in range(30):
        picked = valor_slices(long, FbankConfig(n_slices=2), train=True, rng=random.Random(seed))
        for k, s in enumerate(picked):
            (index,) = [i for i, c in enumerate(candidates) if np.allclose(s, c, atol=1e-6)]
            assert (index < 4) == (k == 0)  # slice k comes from segment k (slices 0-3, 4-7)
            seen.add(index)
    assert len(seen) >= 6  # random within each segment


def raw_slice(fbank: np.ndarray, i: int) -> np.ndarray:
    """Slice i of a zero-padded filterbank, normalised as VALOR does: (n_mels, 512)."""
    config = FbankConfig()
    part = np.zeros((512, fbank.shape[1]), np.float32)
    chunk = fbank[i * 512 : (i + 1) * 512]
    part[: len(chunk)] = chunk
    return (part.T - config.mean) / (2 * config.std)


def test_passt_front_end_matches_its_definition():
    config = PasstConfig()
    x = tone_and_noise(config.rate, 1.0, seed=2)
    ours = passt_mel(x, config).numpy()
    reference = reference_passt(x, config)
    assert ours.shape == reference.shape == (128, 100)
    assert np.abs(ours - reference).max() < 1e-3


# ------------------------------------------------------------------ extraction and the store


def write_av(path: Path, seconds: float, fps: int = 5) -> Path:
    """A small video whose audio is a 440 Hz tone on the left and 880 Hz on the right (FLAC, 44.1 kHz)."""
    return write_tone_video(path, seconds, fps=fps)


def test_waveform_kinds_are_mono_resampled_once_and_aligned(tmp_path):
    path = write_av(tmp_path / "tone.mkv", 2.0)
    flac_meta, flac = extract_audio(path, AudioSettings("flac", rate=16000))
    aac_meta, aac = extract_audio(path, AudioSettings("aac", rate=16000))
    from lib.data.audio import decode_waveform

    a, b = decode_waveform(flac_meta, flac), decode_waveform(aac_meta, aac)
    assert flac_meta["samples"] == aac_meta["samples"] == len(a) == len(b)
    assert abs(len(a) - 32000) < 64
    spectrum = np.abs(np.fft.rfft(a))
    hz = np.fft.rfftfreq(len(a), 1 / 16000)
    peaks = sorted(hz[np.argsort(spectrum)[-2:]].round())
    assert peaks == [440.0, 880.0]  # the mono downmix holds both channels
    # aac in Matroska starts on the first sample (the encoder delay is recorded and dropped)
    lag = np.argmax(np.correlate(b[4000:8000], a[4000 - 200 : 8000 + 200], "valid")) - 200
    assert lag == 0
    assert np.corrcoef(a[2000:-2000], b[2000:-2000])[0, 1] > 0.99


def test_stored_filterbank_equals_the_filterbank_of_the_stored_waveform(tmp_path):
    path = write_av(tmp_path / "tone.mkv", 3.0)
    meta, data = extract_audio(path, AudioSettings("fbank"))
    wave_meta, wave = extract_audio(path, AudioSettings("flac"))
    from lib.data.audio import decode_fbank, decode_waveform

    stored = decode_fbank(meta, data)
    computed = kaldi_fbank(decode_waveform(wave_meta, wave), 22050)
    assert stored.shape == computed.shape == (meta["frames"], 64)
    assert np.abs(stored - computed).max() < 0.02  # float16 storage


def test_long_audio_is_streamed_in_bounded_memory(tmp_path):
    path = write_av(tmp_path / "long.mkv", 180.0, fps=1)  # 3 minutes: 16 MB as float32 at 22050 Hz
    tracemalloc.start()
    meta, data = extract_audio(path, AudioSettings("fbank"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert meta["seconds"] == pytest.approx(180.0, abs=0.05)
    assert peak < 3 * len(data) + (4 << 20), (
        f"peak {peak / 1e6:.1f} MB for {len(data) / 1e6:.1f} MB of features"
    )


def test_extraction_is_opt_in(tmp_path, msrvtt_sample):
    summary = extract_videos([msrvtt_sample / "video7010.mp4"], 2, tmp_path / "img", progress=False)
    assert "audio" not in summary and "audio_settings" not in summary
    assert not audio_tsv_path(tmp_path / "img").exists()


def test_the_real_sample_stores_nine_tracks_and_records_the_silent_video(msrvtt_sample, tmp_path):
    prefix = tmp_path / "img_msrvtt"
    summary = extract_videos(msrvtt_sample, 2, prefix, audio=AudioSettings(), progress=False, workers=2)
    assert summary["counts"]["failed"] == 0 and summary["rows"] == 10
    assert summary["audio"]["no_audio"] == [{"id": "video7013", "reason": "no audio stream"}]
    assert summary["audio"]["rows"] == 10 and summary["audio"]["counts"]["without_audio"] == 1
    store = AudioStore.beside(prefix.with_suffix(".tsv"))
    assert store.ids() == set(TSVFile(prefix.with_suffix(".tsv")).keys())
    durations = {"video7010": 18.0, "video7015": 11.0, "video7018": 25.0}
    audible = 0
    for vid in sorted(store.ids()):
        fbank = store.fbank(vid)
        if vid == "video7013":
            assert fbank is None
            slices, has_audio = audio_slices(store, vid)
            assert not has_audio and not slices.any()
            continue
        meta, _ = store.row(vid)
        assert fbank.shape == (meta["frames"], 64) and -16 < fbank.min() <= fbank.max() < 20  # floor -15.9
        audible += fbank.max() > -15  # video7010's track is digital silence: a track all the same
        if vid in durations:
            assert meta["seconds"] == pytest.approx(durations[vid], abs=0.05)
    assert audible == 8
    batch = stack_audio([audio_slices(store, v) for v in ("video7012", "video7013")])
    assert batch[0].shape == (2, 2, 64, 512) and batch[1].tolist() == [[True, True], [False, False]]
    report = inspect_audio_tsv(audio_tsv_path(prefix), frame_tsv=prefix.with_suffix(".tsv"))
    assert report.ok and (report.with_audio, report.without_audio) == (9, 1)


def test_a_killed_audio_table_resumes_and_audio_can_be_added_later(msrvtt_sample, tmp_path):
    videos = [msrvtt_sample / f"video70{i}.mp4" for i in (10, 13, 15)]
    prefix = tmp_path / "img"
    extract_videos(videos, 2, prefix, progress=False)  # frames only
    summary = extract_videos(videos, 2, prefix, audio=AudioSettings(), progress=False)
    assert summary["counts"]["skipped"] == 3 and summary["counts"]["ok"] == 0  # audio only
    assert summary["audio"]["counts"] == {"written": 3, "without_audio": 1, "skipped": 0}
    journal = [json.loads(line) for line in (tmp_path / "img.videos.jsonl").read_text().splitlines()]
    assert all(r["n_frames"] > 0 for r in journal)  # the audio-only records keep the frames' facts
    # a kill mid-row: the last row torn, the table left in progress
    audio = audio_tsv_path(prefix)
    rows = audio.read_bytes().splitlines(keepends=True)
    inprogress = Path(str(audio) + ".inprogress")
    inprogress.write_bytes(b"".join(rows[:1]) + rows[1][: len(rows[1]) // 2])
    audio.unlink()
    summary = extract_videos(videos, 2, prefix, audio=AudioSettings(), progress=False)
    assert summary["audio"]["counts"] == {"written": 2, "without_audio": 1, "skipped": 1}
    assert summary["audio"]["no_audio"] == [{"id": "video7013", "reason": "no audio stream"}]
    table = TSVFile(audio)
    assert sorted(table.keys()) == ["video7010", "video7013", "video7015"]
    assert inspect_audio_tsv(audio, frame_tsv=prefix.with_suffix(".tsv")).ok
    again = extract_videos(videos, 2, prefix, audio=AudioSettings(), progress=False)
    assert again["audio"]["counts"]["skipped"] == 3 and again["audio"]["no_audio"][0]["id"] == "video7013"
    with pytest.raises(ValueError, match="audio settings"):
        extract_videos(videos, 2, prefix, audio=AudioSettings("flac"), progress=False)


def test_check_tsv_reports_a_missing_audio_row(msrvtt_sample, tmp_path):
    import subprocess
    import sys

    prefix = tmp_path / "img"
    videos = [msrvtt_sample / "video7010.mp4", msrvtt_sample / "video7011.mp4"]
    extract_videos(videos, 1, prefix, audio=AudioSettings("flac"), progress=False)
    tool = Path(__file__).resolve().parents[2] / "_tools" / "check_tsv.py"
    run = lambda *a: subprocess.run([sys.executable, str(tool), *a], capture_output=True, text=True)  # noqa: E731
    assert run(str(prefix) + ".tsv", "--decode").returncode == 0
    audio = audio_tsv_path(prefix)
    first = audio.read_bytes().splitlines(keepends=True)[0]
    audio.write_bytes(first)
    os.remove(str(audio).replace(".tsv", ".lineidx"))
    result = run(str(prefix) + ".tsv")
    assert result.returncode == 1 and "have no audio row" in result.stdout
    audio.write_bytes(first.replace(b'"flac"', b'"wav"'))
    result = run(str(audio))
    assert result.returncode == 1 and "not audio meta" in result.stdout


def write_audio_store(path: Path, rows: dict[str, tuple[dict, bytes | None]]) -> Path:
    """An audio TSV + .lineidx of ``{video id: (meta, data)}`` rows."""
    from lib.data.audio import audio_row

    offsets, body = [], b""
    for video_id, (meta, data) in rows.items():
        offsets.append(len(body))
        body += b"\t".join(audio_row(video_id, meta, data)) + b"\n"
    path.write_bytes(body)
    path.with_suffix(".lineidx").write_text("".join(f"{o}\n" for o in offsets))
    return path


def test_the_passt_front_end_is_a_feature_choice_of_the_audio_path(tmp_path):
    """``FbankConfig(front_end="passt")`` (config key ``audio_front_end``): the audio store gives PaSST's
    log-mel of a stored waveform, sliced like the filterbank and not normalised again; a filterbank row is an
    error naming the extraction to run."""
    from lib.data.audio import AudioFormatError, FbankConfig, decode_waveform, fbank_slices, passt_input

    path = write_av(tmp_path / "tone.mkv", 3.0)
    wave_meta, wave = extract_audio(path, AudioSettings("flac", rate=32000))
    fbank_meta, fbank = extract_audio(path, AudioSettings("fbank", rate=32000))
    store = AudioStore(
        write_audio_store(tmp_path / "a.audio.tsv", {"w": (wave_meta, wave), "f": (fbank_meta, fbank)})
    )
    config = FbankConfig(rate=32000, n_mels=128, slice_frames=496, n_slices=2, front_end="passt")
    mel = store.fbank("w", config)
    expected = passt_input(decode_waveform(wave_meta, wave)).numpy()  # (128, 1000): 10 s, zero-padded
    assert mel.shape == (1000, 128)
    np.testing.assert_array_equal(mel, expected.T)
    slices, has_audio = fbank_slices(mel, config)
    assert has_audio and slices.shape == (2, 128, 496)
    np.testing.assert_array_equal(slices[0], expected[:, :496])  # PaSST's own normalisation, kept as is
    with pytest.raises(AudioFormatError, match="PaSST front end needs a stored waveform"):
        store.fbank("f", config)
    with pytest.raises(ValueError, match="front end"):
        FbankConfig(front_end="mp3")
    assert not np.array_equal(store.fbank("w", FbankConfig(rate=32000)), mel[:, :64])  # the default: Kaldi


def test_audio_front_end_passt_is_validated_by_the_run_config():
    from lib.engine.config import ConfigError, load_config
    from lib.tasks.common import fbank_config

    with pytest.raises(ConfigError, match="audio_front_end"):
        load_config(["--audio_front_end", "mp3"])
    with pytest.raises(ConfigError, match="set audio_rate 32000 and audio_mel_bins 128"):
        fbank_config(load_config(["--audio_front_end", "passt"]))
    passt = fbank_config(
        load_config(["--audio_front_end", "passt", "--audio_rate", "32000", "--audio_mel_bins", "128"])
    )
    assert passt.front_end == "passt" and fbank_config(load_config([])).front_end == "fbank"
