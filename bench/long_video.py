"""Long videos: many frames with bounded memory, and how to store them (one row per video or per clip).

Part 1, extraction. A 10-minute 320x180 25 fps video (15,000 frames, x264 ultrafast, keyframes every 250
frames; made once with lib/data/video_write.py and cached in ``--cache``). Each method runs in a fresh
subprocess that reports its wall and CPU time, its peak RSS (``VmHWM``; ``ru_maxrss`` would keep the parent's
mark across fork + exec) and what reading added to the RSS the process had after its imports:

* ``long row, N``: :func:`lib.data.long_video.read_long_video` (seek plan, each frame JPEG-encoded when
  decoded: memory holds N JPEGs);
* ``RGB kept, N``: :func:`lib.data.video.read_frames` without ``convert`` (the same picks, N RGB frames
  held until the end: what a caller encoding afterwards holds);
* ``decode all``: every frame decoded (nothing kept): the time the reference's decode-everything pays
  before it picks; its memory (every RGB frame in a list) is given as arithmetic, not run.

Part 2, the store. The same 64 frames of the video as ONE row (``id \\t meta \\t 64 frames``, what
lib/data/long_video.py writes) or as 4 rows of 16 keyed ``id#k``; a store of ``--videos`` such videos. One
long-form sample = 4 clips x 8 frames, the eval rule, 192 x 320 frames (LF-VILA's size): with one row, the
:class:`lib.data.multi_clip.MultiClipDataset` path; with rows per clip, 4 lookups + ``VideoStore.clip``.
CPU ms per sample, medians of ``--rounds`` alternating rounds over every video.

    python bench/long_video.py            # about 2 minutes (+1-2 minutes to encode the video once)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

WIDTH, HEIGHT, FPS, MINUTES = 320, 180, 25, 10


def make_video(path: Path) -> Path:
    """A moving gradient with a moving square: every frame differs, so the encoder cannot skip any."""
    from lib.data.video_write import write_video

    if path.exists():
        return path
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]

    def frames():
        for i in range(MINUTES * 60 * FPS):
            frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            frame[..., 0] = (x + i) % 256
            frame[..., 1] = (y * 2 + i // 3) % 256
            frame[..., 2] = 90
            top, left = (i * 3) % (HEIGHT - 40), (i * 5) % (WIDTH - 40)
            frame[top : top + 40, left : left + 40] = 255
            yield frame

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames(), fps=FPS, options={"preset": "ultrafast"})


def rss_mb(field: str) -> float:
    """This process's resident memory now (VmRSS) or its high-water mark since exec (VmHWM), MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def run_method(method: str, path: str, n: int) -> dict[str, float]:
    import av

    from lib.data.long_video import read_long_video
    from lib.data.video import read_frames

    before_mb = rss_mb("VmRSS")  # after the imports: what reading the video adds comes on top
    wall, cpu = time.perf_counter(), time.process_time()
    if method == "long row":
        read_long_video(path, n)
    elif method == "RGB kept":
        read_frames(path, n)
    else:
        with av.open(path) as container:
            for _ in container.decode(video=0):  # every frame decoded, none kept
                pass
    peak_mb = rss_mb("VmHWM")
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "peak_rss_mb": peak_mb,
            "added_mb": peak_mb - before_mb}  # fmt: skip


def build_stores(video: Path, folder: Path, n_videos: int) -> tuple[Path, Path]:
    from lib.data.long_video import read_long_video
    from lib.data.tsv import TSVWriter

    row = read_long_video(video, 64)
    one, per_clip = folder / "img_one_row", folder / "img_per_clip"
    with TSVWriter(one) as a, TSVWriter(per_clip) as b:
        for v in range(n_videos):
            a.write(row.columns(f"v{v}"))
            for k in range(4):
                b.write([f"v{v}#{k}".encode(), *row.frames[16 * k : 16 * (k + 1)]])
    return Path(f"{one}.tsv"), Path(f"{per_clip}.tsv")


def loader_rounds(one: Path, per_clip: Path, n_videos: int, rounds: int) -> dict[str, list[float]]:
    import torch

    from lib.data.annotations import ParagraphItem
    from lib.data.datasets import VideoStore
    from lib.data.frames import ClipTransform
    from lib.data.multi_clip import MultiClipDataset

    torch.set_num_threads(1)  # as in a DataLoader worker
    transform = ClipTransform(192, train=False, mode="img_center_crop", normalize=False, frame_hw=(192, 320))
    records = [ParagraphItem(f"v{v}", ("a", "b", "c", "d")) for v in range(n_videos)]
    dataset = MultiClipDataset(VideoStore(one), records, 4, 8, transform)
    clips = VideoStore(per_clip)

    def by_row() -> None:
        for i in range(len(dataset)):
            assert dataset[i]["video"].shape == (32, 3, 192, 320)

    def by_clip_rows() -> None:
        for v in range(n_videos):
            video = torch.cat([clips.clip(f"v{v}#{k}", 8, transform) for k in range(4)])
            assert video.shape == (32, 3, 192, 320)

    times: dict[str, list[float]] = {"one row per video": [], "one row per clip (id#k)": []}
    by_row(), by_clip_rows()  # warm-up: page cache, index files
    for _ in range(rounds):
        for name, fn in zip(times, (by_row, by_clip_rows)):
            start = time.process_time()
            fn()
            times[name].append((time.process_time() - start) * 1000 / n_videos)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", default="/tmp/lavender_bench", help="where the generated video is kept")
    parser.add_argument("--frames", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--videos", type=int, default=20, help="store rows (copies of the one video)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "PATH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_method(args.child[0], args.child[1], int(args.child[2]))))
        return

    from model import machine  # bench/model.py's machine line

    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}")
    video = make_video(Path(args.cache) / f"long_{MINUTES}min_{HEIGHT}p.mp4")
    n_frames = MINUTES * 60 * FPS
    print(f"video: {video} ({n_frames} frames, {WIDTH}x{HEIGHT}, {video.stat().st_size / 2**20:.1f} MiB)")
    print(f"{'method':>12}  {'N':>4}  {'wall s':>7}  {'CPU s':>6}  {'peak RSS MB':>11}  {'added MB':>8}")
    jobs = [("long row", n) for n in args.frames] + [("RGB kept", max(args.frames)), ("decode all", 0)]
    for method, n in jobs:
        cmd = [sys.executable, __file__, "--child", method, str(video), str(n)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"{method}: failed\n{done.stderr[-2000:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        peak, added = f"{r['peak_rss_mb']:.0f}", f"{r['added_mb']:.0f}"
        cells = (method, n or "all", f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}", peak, added)
        print("  ".join(f"{c:>{w}}" for c, w in zip(cells, (12, 4, 7, 6, 11, 8))), flush=True)
    every_rgb = n_frames * WIDTH * HEIGHT * 3 / 2**20
    print(
        f"decode-all-and-keep (the reference extractor): {every_rgb:.0f} MB of RGB frames alone (arithmetic)"
    )

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        one, per_clip = build_stores(video, Path(folder), args.videos)
        sizes = {"one row per video": one.stat().st_size, "one row per clip (id#k)": per_clip.stat().st_size}
        times = loader_rounds(one, per_clip, args.videos, args.rounds)
    print(f"store: {args.videos} videos x 64 frames; a sample = 4 clips x 8 frames at 192x320, eval rule")
    print(f"{'layout':>24}  {'CPU ms/sample (median)':>22}  {'range':>13}  {'TSV MB':>6}")
    for name, values in times.items():
        span = f"{min(values):.1f}-{max(values):.1f}"
        cells = (name, f"{statistics.median(values):.1f}", span, f"{sizes[name] / 2**20:.1f}")
        print("  ".join(f"{c:>{w}}" for c, w in zip(cells, (24, 22, 13, 6))))
    print(f"load average at end {os.getloadavg()[0]:.1f} (the 2 cores may be shared with other jobs)")


if __name__ == "__main__":
    main()
