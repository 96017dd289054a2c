"""Audio extraction: our streamed extractor (``lib.data.audio.extract_audio``, each store kind) against
decoding and resampling the whole track with PyAV, videos/s and peak RSS, one process each; then what each
stored kind costs to read back into the audio encoder's input, and its size.

Methods (each in a fresh subprocess that reports its CPU time and peak RSS, ``VmHWM``):

* ``pyav-whole``: decode every audio frame of the track into memory, then resample the whole track to mono
  22,050 Hz in one call (the floor: it stores nothing and computes no features);
* ``pyav-whole+fbank``: the same, then VALOR's filterbank of the whole waveform (what ``ffmpeg -ac 1 -ar
  22050`` to a WAV file and ``torchaudio`` fbank on it amounts to; the same features as ``ours-fbank``);
* ``ours-fbank`` / ``ours-flac`` / ``ours-aac``: the extractor's ``--audio fbank|flac|aac`` row, streamed.

Data: the shared MSR-VTT sample (the 9 clips with audio, 10-25 s, AAC 44.1 kHz) and, for memory, a generated
10-minute video (FLAC 44.1 kHz stereo audio, 1 fps 64x48 video; cached in ``--cache``).

    .venv/bin/python bench/audio_extract.py            # about 2 minutes (+ ~30 s to write the long video)
    .venv/bin/python bench/audio_extract.py --long_minutes 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE = REPO.parent / "shared" / "data" / "msrvtt-sample"
METHODS = ("pyav-whole", "pyav-whole+fbank", "ours-fbank", "ours-flac", "ours-aac")
RATE = 22050


def whole_track(path: str) -> np.ndarray:
    """Every audio frame decoded and kept, then one resampling call over the whole track."""
    import av

    with av.open(path) as container:
        stream = container.streams.audio[0]
        planes = [frame.to_ndarray() for frame in container.decode(stream)]
        layout, rate, fmt = stream.layout.name, stream.rate, stream.format.name
    samples = np.concatenate(planes, axis=1)  # planar (channels, n)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=fmt, layout=layout)
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    out = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out)


def run_child(method: str, paths: list[str], repeat: int) -> dict:
    from lib.data.audio import AudioSettings, extract_audio, kaldi_fbank

    def work(path: str) -> int:
        if method.startswith("pyav-whole"):
            wave = whole_track(path)
            if method.endswith("+fbank"):
                return kaldi_fbank(wave, RATE).astype(np.float16).nbytes
            return wave.nbytes
        _, data = extract_audio(path, AudioSettings(method.split("-")[1]))
        return len(data or b"")

    work(paths[0])  # warm-up (imports, codec tables)
    best_cpu, best_wall, stored = float("inf"), float("inf"), 0
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        stored = sum(work(p) for p in paths)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    return {"cpu": best_cpu, "wall": best_wall, "rss_mb": rss, "bytes": stored}


def child(method: str, paths: list[str], repeat: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, "--repeat", str(repeat), *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_long_video(path: Path, minutes: float) -> Path:
    from lib.data.video_write import write_tone_video

    return path if path.exists() else write_tone_video(path, minutes * 60, fps=1, tones=(300.0, 550.0))


def load_costs(paths: list[str], repeat: int) -> list[tuple[str, float, float]]:
    """(kind, ms of CPU per clip from a stored row to the encoder's (2, 64, 512) input, bytes per second)."""
    from lib.data.audio import (
        AudioSettings,
        FbankConfig,
        decode_fbank,
        decode_waveform,
        extract_audio,
        kaldi_fbank,
        valor_slices,
    )

    config = FbankConfig()
    rows = {kind: [extract_audio(p, AudioSettings(kind)) for p in paths] for kind in ("fbank", "flac", "aac")}
    seconds = sum(meta["seconds"] for meta, _ in rows["fbank"])
    out = []
    for kind, items in rows.items():
        best = float("inf")
        for _ in range(repeat):
            start = time.process_time()
            for meta, data in items:
                if kind == "fbank":
                    fbank = decode_fbank(meta, data)
                else:
                    fbank = kaldi_fbank(decode_waveform(meta, data), RATE)
                valor_slices(fbank, config)
            best = min(best, time.process_time() - start)
        size = sum(len(data) for _, data in items)
        out.append((kind, 1000 * best / len(items), size / seconds))
    return out


def cpu_name() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--long_minutes", type=float, default=10.0)
    p.add_argument("--cache", default="/tmp/lavender_bench")
    p.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.paths, args.repeat)))
        return

    import av

    paths = sorted(str(v) for v in SAMPLE.glob("video*.mp4"))
    with_audio = []
    for path in paths:
        with av.open(path) as container:
            if container.streams.audio:
                with_audio.append(path)
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(
        f"data: {len(with_audio)} MSR-VTT clips with audio (of {len(paths)}), one process, "
        f"best of {args.repeat}\n"
    )
    print("| method | videos/s (CPU) | videos/s (wall) | peak RSS MB |")
    print("|---|---:|---:|---:|")
    results = {}
    for method in METHODS:
        r = results[method] = child(method, with_audio, args.repeat)
        n = len(with_audio)
        print(f"| {method} | {n / r['cpu']:.1f} | {n / r['wall']:.1f} | {r['rss_mb']:.0f} |", flush=True)

    print("\n| stored kind | bytes per s of audio | kbit/s | CPU ms per clip to the encoder input |")
    print("|---|---:|---:|---:|")
    for kind, ms, per_second in load_costs(with_audio, args.repeat):
        print(f"| {kind} | {per_second:,.0f} | {per_second * 8 / 1000:.0f} | {ms:.1f} |")

    if args.long_minutes > 0:
        long = write_long_video(Path(args.cache) / f"audio_{args.long_minutes:g}min.mkv", args.long_minutes)
        print(f"\n{args.long_minutes:g}-minute video (44.1 kHz stereo): peak RSS")
        print("| method | seconds (CPU) | peak RSS MB |")
        print("|---|---:|---:|")
        for method in ("pyav-whole", "pyav-whole+fbank", "ours-fbank", "ours-flac"):
            r = child(method, [str(long)], 1)
            print(f"| {method} | {r['cpu']:.1f} | {r['rss_mb']:.0f} |", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
