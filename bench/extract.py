"""Frame extraction: our extractor vs the reference method, videos/s and peak RSS, one worker.

The reference method (LAVENDER/VIOLET ``_tools/extract_video-frame.py``): demux every packet of every stream,
decode it, convert every video frame to a PIL RGB image kept in a list, then pick K by
``int(N*(i+1))`` and JPEG-encode them. Ours: :func:`lib.data.video.read_frames` (strategy auto, plus the two
forced strategies for tuning) + :func:`lib.data.video.encode_jpeg`. Each (method, data, K) runs in a fresh
subprocess that reports its own time and peak RSS (``VmHWM``), so memory figures do not mix.

Data: the shared MSR-VTT sample (10 real clips, 320x240), generated 1280x720 30 fps clips with x264's default
keyframe spacing (keyint 250, preset veryfast, moving texture), and a 10-minute 720p video (a 60 s low-motion
ultrafast segment concatenated ten times without re-encoding) for the memory check. Generated files are
cached in ``--cache`` (default /tmp/lavender_bench).

    .venv/bin/python bench/extract.py          # everything: a few minutes (+1-2 min to encode, first run)
    .venv/bin/python bench/extract.py --quick  # the shared sample only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE = REPO.parent / "shared" / "data" / "msrvtt-sample"
METHODS = ("reference", "ours", "ours-sequential", "ours-seek")
TARGET_SPEEDUP_K5 = 5.0
TARGET_LONG_RSS_MB = 400.0


# ------------------------------------------------------------------------------------------- methods


def extract_reference(path: str, k: int) -> list[bytes]:
    """The reference extractor's method, kept as it was (every frame decoded, converted and kept)."""
    import av

    from lib.data.video import reference_frame_indices

    images = []
    with av.open(path) as container:
        for packet in container.demux():
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    images.append(frame.to_image())
    picked = []
    for i in reference_frame_indices(len(images), k):
        buffer = io.BytesIO()
        images[i].save(buffer, format="JPEG")
        picked.append(buffer.getvalue())
    return picked


def extract_ours(path: str, k: int, strategy: str) -> list[bytes]:
    from lib.data.video import encode_jpeg, read_frames

    return [encode_jpeg(frame) for frame in read_frames(path, k, strategy=strategy).frames]


def run_child(method: str, k: int, paths: list[str], repeat: int) -> dict:
    """Time ``method`` over ``paths`` (best of ``repeat`` passes after one warm-up video) in this process."""
    if method == "reference":

        def extract(p):
            return extract_reference(p, k)
    else:
        strategy = {"ours": "auto", "ours-sequential": "sequential", "ours-seek": "seek"}[method]

        def extract(p):
            return extract_ours(p, k, strategy)

    extract(paths[0])  # imports, decoder set-up, file cache
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        for path in paths:
            extract(path)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {
        "videos_per_s": len(paths) / best_wall,
        "videos_per_cpu_s": len(paths) / best_cpu,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; ru_maxrss also counts the memory of the parent
    this process was forked from (the bench's own arrays), so it is only the fallback off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method: str, k: int, paths: list[Path], repeat: int) -> dict:
    """Run one measurement in a fresh interpreter (its own peak RSS)."""
    command = [sys.executable, __file__, "--child", method, "--k", str(k), "--repeat", str(repeat), "--"]
    done = subprocess.run(command + [str(p) for p in paths], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} K={k} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- data


def textured_clip(path: Path, seconds: int, seed: int) -> Path:
    """1280x720 30 fps, x264 veryfast with its default keyint 250 (B-frames on): a moving gradient over a
    drifting texture, so decoding costs what real footage costs."""
    from lib.data.video_write import write_video

    if path.exists():
        return path
    height, width, n = 720, 1280, seconds * 30
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 40, (height + n, width + n), dtype=np.uint8)  # drifts 1 px/frame, never wraps
    yy, xx = np.mgrid[0:height, 0:width]

    def frames():
        for i in range(n):
            gradient = ((xx + i * (4 + seed)) % width * 200 // width + yy * 55 // height).astype(np.uint8)
            t = texture[i : i + height, i : i + width]
            yield np.stack([gradient + t, gradient // 2 + t, (255 - gradient) // 2 + t], axis=-1)

    print(f"  encoding {path.name} ({seconds} s of 720p) ...", flush=True)
    return write_video(path, frames(), fps=30, options={"preset": "veryfast"})


def long_video(path: Path, minutes: int = 10) -> Path:
    """A ``minutes``-long 1280x720 30 fps video: a 60 s low-motion ultrafast segment (keyint 250) whose
    packets are concatenated ``minutes`` times with shifted timestamps (no re-encoding)."""
    import av

    from lib.data.video_write import write_video
    from lib.utils.atomic import write_atomic_path

    if path.exists():
        return path
    segment = path.with_name("segment_60s_720p.mp4")
    if not segment.exists():
        height, width = 720, 1280
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([xx * 200 // width, yy * 200 // height, np.full_like(xx, 90)], -1).astype(np.uint8)
        cycle = []
        for i in range(60):
            frame = base.copy()
            frame[300:400, 20 + i * 15 : 120 + i * 15] = (230, 230, 40)
            cycle.append(frame)
        print(f"  encoding {segment.name} (60 s of low-motion 720p) ...", flush=True)
        write_video(segment, (cycle[i % 60] for i in range(1800)), fps=30, options={"preset": "ultrafast"})
    with av.open(str(segment)) as probe:
        stream = probe.streams.video[0]
        span = int(stream.duration or 0) or int(1800 / 30 / stream.time_base)

    def concatenate(tmp: Path) -> None:
        with av.open(str(tmp), "w") as out:
            out_stream = None
            for repeat in range(minutes):
                with av.open(str(segment)) as src:
                    in_stream = src.streams.video[0]
                    if out_stream is None:
                        out_stream = out.add_stream_from_template(in_stream)
                    for packet in src.demux(in_stream):
                        if packet.size == 0:
                            continue
                        packet.pts += repeat * span
                        packet.dts += repeat * span
                        packet.stream = out_stream
                        out.mux(packet)

    return write_atomic_path(path, concatenate)


# --------------------------------------------------------------------------------------------- report


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()}-core {cpu} CPU, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.system()}"
    )


def video_frames(path: Path) -> tuple[int, int, int]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames, stream.width, stream.height


def describe(name: str, paths: list[Path]) -> str:
    """Frames, size and keyframe spacing of a data set (from a demux pass)."""
    import av

    frames, gaps, size = 0, [], ""
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            size = f"{stream.width}x{stream.height}"
            keys = [i for i, p in enumerate(p for p in container.demux(stream) if p.size) if p.is_keyframe]
            frames += stream.frames
            gaps += [b - a for a, b in zip(keys, keys[1:])]
    spacing = f"median keyframe interval {sorted(gaps)[len(gaps) // 2]}" if gaps else "one keyframe per video"
    return f"{name}: {len(paths)} videos, {size}, {frames} frames, {spacing}"


def reference_memory_need_gb(paths: list[Path]) -> float:
    """The reference keeps every decoded frame as an RGB image: frames x W x H x 3 bytes, at least."""
    need = 0
    for path in paths:
        n, width, height = video_frames(path)
        need = max(need, n * width * height * 3)
    return need / 2**30


def bench_rows(
    name: str, paths: list[Path], ks: tuple[int, ...], methods: tuple[str, ...], repeat: int
) -> list:
    import psutil

    rows = []
    for k in ks:
        results = {}
        for method in methods:
            if method == "reference":
                need = reference_memory_need_gb(paths)
                if need > 0.7 * psutil.virtual_memory().available / 2**30:
                    results[method] = {"skipped": f"needs ~{need:.0f} GB (estimate)"}
                    continue
            results[method] = measure(method, k, paths, repeat)
            r = results[method]
            print(
                f"  {name} K={k} {method}: {r['videos_per_s']:.2f} videos/s, {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )
        rows.append((name, k, len(paths), results))
    return rows


def print_table(rows: list) -> list[str]:
    header = (
        "| data | K | videos | method | videos/s (wall) | videos/CPU-s | vs reference (CPU) | peak RSS MB |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, k, n, results in rows:
        ref = results.get("reference", {})
        for method, r in results.items():
            if "skipped" in r:
                lines.append(f"| {name} | {k} | {n} | {method} | skipped: {r['skipped']} | | | |")
                continue
            ratio = r["videos_per_cpu_s"] / ref["videos_per_cpu_s"] if "videos_per_cpu_s" in ref else None
            cells = [name, k, n, method, f"{r['videos_per_s']:.2f}", f"{r['videos_per_cpu_s']:.2f}",
                     f"{ratio:.1f}x" if ratio else "-", f"{r['peak_rss_mb']:.0f}"]  # fmt: skip
            lines.append("| " + " | ".join(map(str, cells)) + " |")
            if method == "ours" and ratio:
                if k == 5 and name == "msrvtt-sample":
                    verdicts.append(
                        f"K=5 {name}: {ratio:.1f}x >= {TARGET_SPEEDUP_K5}x: "
                        f"{'PASS' if ratio >= TARGET_SPEEDUP_K5 else 'FAIL'}"
                    )
                if k == 32:
                    verdicts.append(
                        f"K=32 {name}: {ratio:.1f}x, never slower: {'PASS' if ratio >= 1 else 'FAIL'}"
                    )
            if method == "ours" and name.startswith("10-min"):
                ok = r["peak_rss_mb"] <= TARGET_LONG_RSS_MB
                verdicts.append(
                    f"{name} K={k}: peak RSS {r['peak_rss_mb']:.0f} MB <= {TARGET_LONG_RSS_MB:.0f} MB: "
                    f"{'PASS' if ok else 'FAIL'}"
                )
    print("\n".join(lines))
    print()
    print("\n".join(verdicts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="/tmp/lavender_bench", help="where generated videos are kept")
    parser.add_argument("--quick", action="store_true", help="the shared sample only")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per measurement (best is kept)")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.k, args.paths, args.repeat)))
        return

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    started = time.time()
    datasets = []  # (name, paths, methods, repeat)
    sample = sorted(SAMPLE.glob("*.mp4"))
    if sample:
        datasets.append(("msrvtt-sample", sample, METHODS, args.repeat))
    else:
        print(f"shared sample not found at {SAMPLE}; skipped")
    if not args.quick:
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        clips = [textured_clip(cache / f"clip720p_20s_seed{seed}.mp4", 20, seed) for seed in (1, 2)]
        datasets.append(("720p 20 s clips", clips, METHODS, 1))
        datasets.append(
            ("10-min 720p", [long_video(cache / "long_10min_720p.mp4")], ("ours", "reference"), 1)
        )
    for name, paths, _, _ in datasets:
        print(describe(name, paths))
    rows = []
    for name, paths, methods, repeat in datasets:
        rows += bench_rows(name, paths, (5, 32), methods, repeat)
    print()
    print_table(rows)
    print(f"\nbench time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
