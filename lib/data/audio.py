"""Audio: extraction into a sidecar TSV keyed by video id, the store that reads it, and the seeds' features.

**Store** (written by the extractor with ``--audio``, :mod:`lib.data.extract`): beside ``PREFIX.tsv`` (frames)
sits ``PREFIX.audio.tsv`` + ``.lineidx``, one row per video, keyed by the SAME id as its frame row and read by
id, never by row order (FAVDBench's HDF5 paired audio and frames by position)::

    id \\t {"kind": "fbank", "rate": 22050, "n_mels": 64, "frames": 1501, "seconds": 15.0} \\t base64(float16)
    id \\t {"kind": "flac", "rate": 32000, "samples": 480000, "seconds": 15.0} \\t base64(FLAC file)
    id \\t {"kind": "fbank", "audio": false, "reason": "no audio stream"}            (nothing more)

Three kinds, one per row family (:data:`STORE_KINDS`): ``fbank`` stores VALOR's Kaldi filterbank
(frames x mel bins, float16) computed at extraction; ``flac`` / ``aac`` store the mono waveform, encoded
(``aac`` in a Matroska file, which records the encoder delay, so decoding starts on the first sample). Every
kind is decoded from the source once, downmixed to mono and resampled once to the configured rate
(FFmpeg's resampler: what VALOR's ``ffmpeg -ac 1 -ar 22050`` ran), streamed packet by packet so a long video
never sits decoded in memory. ``BENCHMARKS.md`` ("Audio extraction") measures size and load cost: the
filterbank is the default because decoding a stored waveform and computing it at load time costs ~46 ms of
CPU per MSR-VTT clip, every epoch, where reading it stored costs 0.2 ms; it is half of FLAC's size. A
waveform store serves front-ends computed at load time (FAVDBench's PaSST log-mel at 32 kHz:
``--audio flac --audio_rate 32000``).

**Features**, as the seeds compute them:

* :func:`kaldi_fbank`: VALOR's ``torchaudio.compliance.kaldi.fbank`` call (64 mel bins, 25 ms Hanning
  windows every 10 ms, htk-compatible, dither 0, no energy, pre-emphasis 0.97, power spectrum, natural log)
  through ``kaldi-native-fbank`` (its defaults dither 3e-5 and the "povey" window overridden). VALOR removed
  the waveform's mean first; Kaldi removes each frame's mean anyway (``remove_dc_offset``), so that step
  changes nothing and the filterbank can be computed while streaming.
* :func:`valor_slices`: VALOR's slicing: zero-pad the filterbank to a whole number of 512-frame slices (a
  full padding slice when it already is one), take ``n_slices`` spread uniformly (a random slice per
  segment in training, the middle one otherwise), normalise ``(x - (-4.2677393)) / (4.5689974 * 2)``.
* :func:`passt_mel`: FAVDBench's PaSST front-end (32 kHz, pre-emphasis, STFT n_fft 1024 / window 800 /
  hop 320, Kaldi mel banks 128 x 0-15.5 kHz, ``log(mel + 1e-5)``, ``(x + 4.5) / 5``).

:class:`AudioStore` gives a video's stored audio by id; :func:`audio_slices` a training sample's input for
the audio encoder (``lib.model.encoders.audio``) and whether it has audio at all (VALOR fed silence for a
video without a track; here the model masks it instead).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from lib.data.tsv import MultiTSV, TSVFile

AUDIO_SUFFIX = ".audio"  # PREFIX.tsv (frames) -> PREFIX.audio.tsv (audio)
STORE_KINDS = ("fbank", "flac", "aac")
WAVEFORM_KINDS = ("flac", "aac")
_CONTAINERS = {"flac": ("flac", "flac"), "aac": ("matroska", "aac")}  # kind -> (container, encoder)
_FEED_SAMPLES = 1 << 15  # samples handed to the filterbank at a time while streaming

# VALOR (config: audio_mean / audio_std; data/data.py AudioMapper)
VALOR_MEAN = -4.2677393
VALOR_STD = 4.5689974


def audio_tsv_path(prefix: str | os.PathLike) -> Path:
    """``PREFIX`` or ``PREFIX.tsv`` (a frame table) -> ``PREFIX.audio.tsv``, its audio sidecar."""
    text = os.fspath(prefix)
    stem = text[: -len(".tsv")] if text.endswith(".tsv") else text
    return Path(stem + AUDIO_SUFFIX + ".tsv")


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class AudioSettings:
    """What the extractor stores per video (recorded in ``PREFIX.json``; a resumed run must match).

    ``kind``: ``fbank`` (VALOR's filterbank, float16), ``flac`` or ``aac`` (the waveform). ``rate``: the one
    sampling rate the audio is resampled to (VALOR 22050; FAVDBench/PaSST 32000). ``n_mels`` (fbank only):
    mel bins. ``bit_rate`` (aac only): bits per second.
    """

    kind: str = "fbank"
    rate: int = 22050
    n_mels: int = 64
    bit_rate: int = 48000

    def __post_init__(self) -> None:
        if self.kind not in STORE_KINDS:
            raise ValueError(f"audio kind must be one of {STORE_KINDS}, got {self.kind!r}")
        if not 1000 <= self.rate <= 192000:
            raise ValueError(f"audio rate must be 1000..192000 Hz, got {self.rate}")
        if self.n_mels < 1 or self.bit_rate < 1000:
            raise ValueError(f"n_mels ({self.n_mels}) and bit_rate ({self.bit_rate}) must be positive")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.kind != "fbank":
            d.pop("n_mels")
        if self.kind != "aac":
            d.pop("bit_rate")
        return d


# ------------------------------------------------------------------------------------------ features


FRONT_ENDS = ("fbank", "passt")
"""The audio encoder's input features: VALOR's Kaldi filterbank, or FAVDBench's PaSST log-mel."""


@dataclass(frozen=True)
class FbankConfig:
    """VALOR's filterbank and slicing (its config keys: audio_melbins, audio_frame_shift, audio_mean/std,
    audio_sample_num; 512 frames per slice). ``front_end`` "passt": FAVDBench's PaSST log-mel instead
    (:func:`passt_frames` of a stored waveform: the first 10 s at ``rate``, ``n_mels`` bins, normalised by
    PaSST's own ``(x + 4.5) / 5``, so ``mean`` / ``std`` are not applied), sliced the same way."""

    rate: int = 22050
    n_mels: int = 64
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    slice_frames: int = 512
    n_slices: int = 2
    mean: float = VALOR_MEAN
    std: float = VALOR_STD
    front_end: str = "fbank"

    def __post_init__(self) -> None:
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"audio front end must be one of {FRONT_ENDS}, got {self.front_end!r}")


def _fbank_options(rate: int, n_mels: int, frame_length_ms: float, frame_shift_ms: float):
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = float(rate)
    opts.frame_opts.frame_length_ms = float(frame_length_ms)
    opts.frame_opts.frame_shift_ms = float(frame_shift_ms)
    opts.frame_opts.dither = 0.0  # kaldi-native-fbank's default is 3e-5; VALOR (torchaudio) used 0
    opts.frame_opts.window_type = "hanning"  # its default is "povey"; its "hann" is not Kaldi's "hanning"
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.round_to_power_of_two = True
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = int(n_mels)
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0  # the Nyquist frequency
    opts.use_energy = False
    opts.htk_compat = True  # only moves the energy column, which is off (as in VALOR's call)
    opts.use_log_fbank = True
    opts.use_power = True
    return opts


class StreamingFbank:
    """The Kaldi filterbank of a waveform fed in pieces (same frames as one call on the whole waveform)."""

    def __init__(
        self, rate: int, n_mels: int = 64, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
    ):
        import kaldi_native_fbank as knf

        self.rate = rate
        self._fbank = knf.OnlineFbank(_fbank_options(rate, n_mels, frame_length_ms, frame_shift_ms))
        self._done = 0
        self.n_mels = n_mels

    def accept(self, samples: np.ndarray) -> None:
        """Add mono float samples in [-1, 1]."""
        if len(samples):
            self._fbank.accept_waveform(float(self.rate), np.ascontiguousarray(samples, dtype=np.float32))

    def frames(self, final: bool = False) -> np.ndarray:
        """(n, n_mels) float32: the frames completed since the last call (all the rest when ``final``)."""
        if final:
            self._fbank.input_finished()
        ready = self._fbank.num_frames_ready
        if ready == self._done:
            return np.zeros((0, self.n_mels), np.float32)
        out = np.stack([self._fbank.get_frame(i) for i in range(self._done, ready)]).astype(np.float32)
        self._fbank.pop(ready - self._done)  # frees their memory; numbering continues
        self._done = ready
        return out


def kaldi_fbank(
    wave: np.ndarray, rate: int, n_mels: int = 64, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
) -> np.ndarray:
    """VALOR's filterbank of mono float samples (in [-1, 1]): (frames, n_mels) float32 log mel energies."""
    fbank = StreamingFbank(rate, n_mels, frame_length_ms, frame_shift_ms)
    fbank.accept(np.asarray(wave, dtype=np.float32) - float(np.mean(wave)) if len(wave) else wave)
    return fbank.frames(final=True)


def _segments(n: int, parts: int) -> list[list[int]]:
    """VALOR's ``split``: 0..n-1 (padded with its last value up to ``parts``) cut into ``parts`` runs."""
    items = list(range(n)) + [n - 1] * max(0, parts - n)
    k, m = divmod(len(items), parts)
    return [items[i * k + min(i, m) : (i + 1) * k + min(i + 1, m)] for i in range(parts)]


def valor_slices(
    fbank: np.ndarray,
    config: FbankConfig = FbankConfig(),
    train: bool = False,
    rng: random.Random | None = None,
) -> np.ndarray:
    """(n_slices, n_mels, slice_frames) float32 from a (frames, n_mels) filterbank, exactly as VALOR slices
    and normalises it (see the module docstring)."""
    length = config.slice_frames
    frames = fbank.shape[0]
    padded = np.zeros(((frames // length + 1) * length, fbank.shape[1]), np.float32)  # VALOR pads a full one
    padded[:frames] = fbank
    segments = _segments(padded.shape[0] // length, config.n_slices)
    rng = rng or random
    picks = [rng.choice(s) if train else s[(len(s) + 1) // 2 - 1] for s in segments]
    slices = np.stack([padded[i * length : (i + 1) * length] for i in picks]).transpose(0, 2, 1)
    if config.front_end == "passt":  # normalised by the front end itself
        return slices
    return (slices - config.mean) / (config.std * 2)


def kaldi_mel_banks(n_mels: int, n_fft: int, rate: float, low_freq: float, high_freq: float) -> np.ndarray:
    """Kaldi's triangular mel filters (mel = 1127 ln(1 + f/700)) over the ``n_fft // 2`` FFT bins below the
    Nyquist bin: (n_mels, n_fft // 2) float64 (``torchaudio.compliance.kaldi.get_mel_banks`` without VTLN)."""
    if high_freq <= 0:
        high_freq += rate / 2
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    low, high = mel(low_freq), mel(high_freq)
    delta = (high - low) / (n_mels + 1)
    left = low + delta * np.arange(n_mels)[:, None]
    center, right = left + delta, left + 2 * delta
    bins = mel(rate / n_fft * np.arange(n_fft // 2))[None, :]
    up, down = (bins - left) / (center - left), (right - bins) / (right - center)
    return np.maximum(0.0, np.minimum(up, down))


@dataclass(frozen=True)
class PasstConfig:
    """FAVDBench's PaSST front-end (AugmentMelSTFT, evaluation mode: no frequency jitter, no masking)."""

    rate: int = 32000
    n_mels: int = 128
    n_fft: int = 1024
    win_length: int = 800
    hop: int = 320
    fmin: float = 0.0
    fmax: float = 15500.0  # sr // 2 - fmax_aug_range // 2, fmax_aug_range 1000
    seconds: float = 10.0  # FAVDBench pads / cuts every clip to 10 s


def passt_mel(wave: np.ndarray, config: PasstConfig = PasstConfig()):
    """(n_mels, frames) float32 tensor: PaSST's normalised log-mel of mono samples at ``config.rate``."""
    import torch

    x = torch.as_tensor(np.asarray(wave, np.float32))
    x = x[1:] - 0.97 * x[:-1]  # pre-emphasis: conv1d with [-0.97, 1]
    window = torch.hann_window(config.win_length, periodic=False)
    spec = torch.stft(
        x, config.n_fft, config.hop, config.win_length, window, center=True, return_complex=True
    )
    power = spec.real**2 + spec.imag**2  # (n_fft // 2 + 1, frames)
    banks = kaldi_mel_banks(config.n_mels, config.n_fft, config.rate, config.fmin, config.fmax)
    banks = torch.as_tensor(np.pad(banks, ((0, 0), (0, 1))), dtype=torch.float32)  # no weight at Nyquist
    return ((banks @ power + 1e-5).log() + 4.5) / 5.0


def passt_input(wave: np.ndarray, config: PasstConfig = PasstConfig()):
    """PaSST's input for one clip: the first ``config.seconds`` of ``wave`` (zero-padded when shorter)."""
    n = int(round(config.seconds * config.rate))
    fixed = np.zeros(n, np.float32)
    fixed[: min(n, len(wave))] = wave[:n]
    return passt_mel(fixed, config)


def passt_frames(wave: np.ndarray, config: FbankConfig) -> np.ndarray:
    """(frames, n_mels) float32: :func:`passt_input` of mono samples at ``config.rate`` (the first 10 s), laid
    out as a filterbank for :func:`valor_slices` (``front_end`` "passt")."""
    return passt_input(wave, PasstConfig(rate=config.rate, n_mels=config.n_mels)).numpy().T.copy()


# ------------------------------------------------------------------------------------------ extraction


class NoAudio(Exception):
    """The file has no (decodable) audio: recorded as a row without audio, never a failure of the video."""


def _mono_chunks(path: str | os.PathLike, rate: int, sample_format: str) -> Iterator[av.AudioFrame]:
    """The first audio stream, decoded packet by packet, downmixed to mono and resampled to ``rate``."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise NoAudio(f"cannot open: {e}") from None
    with container:
        if not container.streams.audio:
            raise NoAudio("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=rate)
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    yield from resampler.resample(frame)
            yield from resampler.resample(None)
        except av.FFmpegError as e:
            raise NoAudio(f"audio stream does not decode: {e}") from None


def _as_float(frame: av.AudioFrame) -> np.ndarray:
    x = frame.to_ndarray().reshape(-1)
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype == np.int32:
        return x.astype(np.float32) / 2147483648.0
    return x.astype(np.float32)


def _extract_fbank(path: str | os.PathLike, settings: AudioSettings) -> tuple[dict[str, Any], bytes]:
    fbank = StreamingFbank(settings.rate, settings.n_mels)
    parts: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    n_pending = samples = 0
    for frame in _mono_chunks(path, settings.rate, "s16"):  # s16: what the reference's WAV files held
        chunk = _as_float(frame)
        pending.append(chunk)
        n_pending += len(chunk)
        samples += len(chunk)
        if n_pending >= _FEED_SAMPLES:
            fbank.accept(np.concatenate(pending))
            pending, n_pending = [], 0
            parts.append(fbank.frames().astype(np.float16))
    if samples == 0:
        raise NoAudio("the audio stream has no samples")
    fbank.accept(np.concatenate(pending) if pending else np.zeros(0, np.float32))
    parts.append(fbank.frames(final=True).astype(np.float16))
    features = np.concatenate(parts)
    if len(features) == 0:
        raise NoAudio(f"{samples} samples: shorter than one 25 ms window")
    meta = {"frames": len(features), "samples": samples}
    return meta, features.astype("<f2").tobytes()


def _extract_waveform(path: str | os.PathLike, settings: AudioSettings) -> tuple[dict[str, Any], bytes]:
    container_format, encoder = _CONTAINERS[settings.kind]
    buffer = io.BytesIO()
    samples = 0
    with av.open(buffer, "w", format=container_format) as out:
        stream = out.add_stream(encoder, rate=settings.rate)
        stream.layout = "mono"
        if settings.kind == "aac":
            stream.bit_rate = settings.bit_rate
        sample_format = stream.codec_context.format.name
        for frame in _mono_chunks(path, settings.rate, sample_format):
            frame.pts = samples
            samples += frame.samples
            for packet in stream.encode(frame):
                out.mux(packet)
        if samples == 0:
            raise NoAudio("the audio stream has no samples")
        for packet in stream.encode(None):
            out.mux(packet)
    return {"samples": samples}, buffer.getvalue()


def extract_audio(path: str | os.PathLike, settings: AudioSettings) -> tuple[dict[str, Any], bytes | None]:
    """One video's audio row: ``(meta, data)``; ``data`` is None (and meta says why) when it has no audio."""
    base = {"kind": settings.kind, "rate": settings.rate}
    if settings.kind == "fbank":
        base["n_mels"] = settings.n_mels
    try:
        extract = _extract_fbank if settings.kind == "fbank" else _extract_waveform
        meta, data = extract(path, settings)
    except NoAudio as e:
        return {**base, "audio": False, "reason": str(e)}, None
    return {**base, **meta, "seconds": round(meta["samples"] / settings.rate, 3)}, data


def audio_row(video_id: str, meta: dict[str, Any], data: bytes | None) -> list[bytes]:
    """The TSV columns of one video's audio row."""
    columns = [video_id.encode(), json.dumps(meta, separators=(",", ":")).encode()]
    if data is not None:
        columns.append(base64.b64encode(data))
    return columns


# ------------------------------------------------------------------------------------------ reading


class AudioFormatError(ValueError):
    """An audio row that cannot be read (names the id and the store)."""


def parse_audio_row(row: Sequence[bytes]) -> tuple[str, dict[str, Any], bytes | None]:
    """(id, meta, decoded data or None) of one audio TSV row; AudioFormatError when it is malformed."""
    key = row[0].decode("utf-8", "replace") if row else ""
    try:
        meta = json.loads(row[1])
        if not isinstance(meta, dict) or meta.get("kind") not in STORE_KINDS:
            raise ValueError(f"meta kind must be one of {STORE_KINDS}")
    except (IndexError, ValueError) as e:
        raise AudioFormatError(f"audio row {key!r}: column 1 is not audio meta JSON ({e})") from None
    has_audio = meta.get("audio", True)
    if has_audio and len(row) != 3:
        raise AudioFormatError(f"audio row {key!r}: {len(row)} columns; expected id, meta, data")
    if not has_audio:
        if len(row) != 2:
            raise AudioFormatError(f"audio row {key!r}: marked without audio but has {len(row)} columns")
        return key, meta, None
    try:
        import pybase64

        data = pybase64.b64decode(row[2], validate=True)
    except ValueError as e:
        raise AudioFormatError(f"audio row {key!r}: data column is not base64 ({e})") from None
    return key, meta, data


def decode_fbank(meta: dict[str, Any], data: bytes) -> np.ndarray:
    """(frames, n_mels) float32 of an ``fbank`` row."""
    n_mels, frames = int(meta["n_mels"]), int(meta["frames"])
    if len(data) != frames * n_mels * 2:
        raise AudioFormatError(f"fbank data holds {len(data)} bytes, meta says {frames} x {n_mels} float16")
    return np.frombuffer(data, dtype="<f2").reshape(frames, n_mels).astype(np.float32)


def decode_waveform(meta: dict[str, Any], data: bytes) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of a ``flac`` / ``aac`` row (cut to the stored sample count)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            chunks = [_as_float(frame) for frame in container.decode(audio=0)]
    except av.FFmpegError as e:
        raise AudioFormatError(f"{meta.get('kind')} data does not decode: {e}") from None
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    n = int(meta["samples"])
    if len(wave) < n - int(meta["rate"]) // 100:  # a codec may lose a few samples at the end, never 10 ms
        raise AudioFormatError(f"{meta.get('kind')} data decodes to {len(wave)} samples, meta says {n}")
    return wave[:n] if len(wave) >= n else np.pad(wave, (0, n - len(wave)))


class AudioStore:
    """Stored audio of many videos, by id (one ``*.audio.tsv`` or several shards); pickles without open
    file handles, so one store serves every DataLoader worker."""

    def __init__(self, tsv: str | os.PathLike | Sequence[str | os.PathLike]):
        paths = [tsv] if isinstance(tsv, str | os.PathLike) else list(tsv)
        if not paths:
            raise ValueError("AudioStore needs at least one audio TSV path")
        self.paths = [Path(p) for p in paths]
        self.tsv: TSVFile | MultiTSV = TSVFile(self.paths[0]) if len(paths) == 1 else MultiTSV(self.paths)

    @classmethod
    def beside(cls, frame_tsv: str | os.PathLike) -> AudioStore:
        """The audio sidecar of a frame table (``X.tsv`` -> ``X.audio.tsv``)."""
        return cls(audio_tsv_path(frame_tsv))

    def __len__(self) -> int:
        return len(self.tsv)

    def ids(self) -> set[str]:
        return set(self.tsv.keys())

    def row(self, video_id: str) -> tuple[dict[str, Any], bytes | None]:
        """(meta, data or None) of ``video_id`` (KeyError naming the store when it has no row)."""
        try:
            index = self.tsv.index_of(video_id)
        except KeyError:
            raise KeyError(f"video {video_id!r} has no row in {[str(p) for p in self.paths]}") from None
        try:
            _, meta, data = parse_audio_row(self.tsv.row(index))
        except AudioFormatError as e:
            raise AudioFormatError(f"{self.paths}: {e}") from None
        return meta, data

    def fbank(self, video_id: str, config: FbankConfig = FbankConfig()) -> np.ndarray | None:
        """(frames, n_mels) float32 filterbank of ``video_id`` (or, with ``config.front_end`` "passt", its
        PaSST log-mel, from a waveform row only); None when the video has no audio. A waveform row is turned
        into one here (at ``config``'s rate only: no second resampling)."""
        meta, data = self.row(video_id)
        if data is None:
            return None
        if config.front_end == "passt" and meta["kind"] not in WAVEFORM_KINDS:
            raise AudioFormatError(
                f"video {video_id!r}: the PaSST front end needs a stored waveform, the store holds "
                f"{meta['kind']!r} features; extract with --audio flac --audio_rate {config.rate}"
            )
        if int(meta["rate"]) != config.rate:
            raise AudioFormatError(
                f"video {video_id!r}: audio stored at {meta['rate']} Hz, the features want {config.rate} Hz; "
                f"extract again with --audio_rate {config.rate}"
            )
        if meta["kind"] == "fbank":
            if int(meta["n_mels"]) != config.n_mels:
                raise AudioFormatError(
                    f"video {video_id!r}: {meta['n_mels']} mel bins stored, the features want {config.n_mels}"
                )
            return decode_fbank(meta, data)
        if config.front_end == "passt":
            return passt_frames(decode_waveform(meta, data), config)
        return kaldi_fbank(
            decode_waveform(meta, data),
            config.rate,
            config.n_mels,
            config.frame_length_ms,
            config.frame_shift_ms,
        )

    def waveform(self, video_id: str) -> tuple[np.ndarray, int] | None:
        """(mono float32 samples, rate) of ``video_id`` from a waveform row; None when it has no audio."""
        meta, data = self.row(video_id)
        if data is None:
            return None
        if meta["kind"] not in WAVEFORM_KINDS:
            raise AudioFormatError(
                f"video {video_id!r}: the store holds {meta['kind']!r} features, not a waveform; "
                f"extract with --audio flac (or aac) for a front-end computed at load time"
            )
        return decode_waveform(meta, data), int(meta["rate"])


def audio_slices(
    store: AudioStore,
    video_id: str,
    config: FbankConfig = FbankConfig(),
    train: bool = False,
    rng: random.Random | None = None,
) -> tuple[np.ndarray, bool]:
    """The audio encoder's input for one clip: (n_slices, n_mels, slice_frames) float32 and whether the
    video has audio (zeros and False without: the model masks those tokens)."""
    return fbank_slices(store.fbank(video_id, config), config, train, rng)


def fbank_slices(
    fbank: np.ndarray | None,
    config: FbankConfig = FbankConfig(),
    train: bool = False,
    rng: random.Random | None = None,
) -> tuple[np.ndarray, bool]:
    """:func:`valor_slices` of a filterbank and True, or zeros and False for a clip without audio (None)."""
    if fbank is None:
        return np.zeros((config.n_slices, config.n_mels, config.slice_frames), np.float32), False
    return valor_slices(fbank, config, train, rng), True


def stack_audio(items: Sequence[tuple[np.ndarray, bool]]):
    """A batch for the model: (B, S, n_mels, frames) float tensor and (B, S) bool validity."""
    import torch

    audio = torch.as_tensor(np.stack([a for a, _ in items]))
    valid = torch.tensor([[ok] * a.shape[0] for a, ok in items], dtype=torch.bool)
    return audio, valid


__all__ = [
    "AUDIO_SUFFIX",
    "STORE_KINDS",
    "AudioFormatError",
    "AudioSettings",
    "AudioStore",
    "FbankConfig",
    "NoAudio",
    "PasstConfig",
    "StreamingFbank",
    "audio_row",
    "audio_slices",
    "audio_tsv_path",
    "decode_fbank",
    "decode_waveform",
    "extract_audio",
    "fbank_slices",
    "kaldi_fbank",
    "kaldi_mel_banks",
    "parse_audio_row",
    "FRONT_ENDS",
    "passt_frames",
    "passt_input",
    "passt_mel",
    "stack_audio",
    "valor_slices",
]
