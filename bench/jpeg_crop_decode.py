"""Would decoding only a train crop's columns of each JPEG speed up the loader? (A route measured, not built.)

Times, on the shared sample's 320x240 reference frames, one thread, in paired rounds:

  cv2          cv2.imdecode of the whole frame (the loader's decoder and bench/loader.py's floor)
  libjpeg      libjpeg-turbo's own API on the whole frame (the system library, through a small C helper)
  libjpeg crop the same decoding only the columns of a 240-px-wide train crop (jpeg_crop_scanline)

and checks the pixels: libjpeg's whole frame against cv2's, the crop against those columns of a whole frame.
Needs gcc and the libjpeg-turbo headers (Debian: libjpeg62-turbo-dev); the helper is compiled into a temporary
folder and nothing is installed.

    .venv/bin/python bench/jpeg_crop_decode.py [--tsv PATH] [--rounds 5] [--repeats 20]
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pybase64

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loader import add_tsv_option, tsv_missing  # noqa: E402  (bench/, this script's folder)

from lib.data.tsv import TSVFile, frame_columns  # noqa: E402

CROP_WIDTH = 240

HELPER = r"""
#include <stdio.h>
#include <setjmp.h>
#include <jpeglib.h>

struct failure { struct jpeg_error_mgr mgr; jmp_buf jump; };
static void on_error(j_common_ptr info) { longjmp(((struct failure *)info->err)->jump, 1); }

/* Decode columns [x, x + width) of every row into out (rows of `stride` bytes, RGB). libjpeg widens the
   columns to whole blocks; returns how many decoded columns lie left of x (-1 on a decoding error). */
int decode_columns(const unsigned char *data, unsigned long size, int x, int width,
                   unsigned char *out, int stride) {
  struct jpeg_decompress_struct info;
  struct failure err;
  info.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = on_error;
  if (setjmp(err.jump)) { jpeg_destroy_decompress(&info); return -1; }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, data, size);
  jpeg_read_header(&info, TRUE);
  info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  JDIMENSION first = (JDIMENSION)x, count = (JDIMENSION)width;
  if (count < info.output_width) jpeg_crop_scanline(&info, &first, &count);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = out + (size_t)info.output_scanline * stride;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return x - (int)first;
}
"""


def build_helper(folder: Path) -> ctypes.CDLL:
    source, library = folder / "decode_columns.c", folder / "libdecode_columns.so"
    source.write_text(HELPER)
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source), "-ljpeg"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    helper = ctypes.CDLL(str(library))
    helper.decode_columns.restype = ctypes.c_int
    helper.decode_columns.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                                      ctypes.c_void_p, ctypes.c_int]  # fmt: skip
    return helper


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tsv_option(p)
    p.add_argument("--rounds", type=int, default=5, help="paired measurement rounds")
    p.add_argument("--repeats", type=int, default=20, help="passes over all frames per path per round")
    args = p.parse_args(argv)
    if tsv_missing(args.tsv):
        return 2
    if shutil.which("gcc") is None or not Path("/usr/include/jpeglib.h").is_file():
        print(
            "error: needs gcc and /usr/include/jpeglib.h (apt-get install libjpeg62-turbo-dev)",
            file=sys.stderr,
        )
        return 2
    cv2.setNumThreads(1)
    tsv = TSVFile(args.tsv)
    jpegs = [pybase64.b64decode(f) for i in range(len(tsv)) for f in frame_columns(tsv.row(i))]
    height, width = cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR_RGB).shape[:2]
    out = np.empty((height, width, 3), np.uint8)

    with tempfile.TemporaryDirectory() as folder:
        helper = build_helper(Path(folder))

        def libjpeg(data: bytes, x: int, w: int) -> np.ndarray:
            left = helper.decode_columns(data, len(data), x, w, out.ctypes.data, out.strides[0])
            if left < 0:
                raise ValueError("libjpeg could not decode a frame")
            return out[:, left : left + w]  # the decoded columns start at x - left

        whole_diff = crop_diff = 0
        for data in jpegs:
            reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
            whole_diff = max(whole_diff, int(np.abs(libjpeg(data, 0, width).astype(int) - reference).max()))
            for x in (0, 37, 80):
                crop = libjpeg(data, x, CROP_WIDTH).astype(int)
                crop_diff = max(crop_diff, int(np.abs(crop - reference[:, x : x + CROP_WIDTH]).max()))

        paths = {
            "cv2.imdecode, whole frame (the floor)": lambda d: cv2.imdecode(
                np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR_RGB
            ),
            "libjpeg-turbo, whole frame": lambda d: libjpeg(d, 0, width),
            f"libjpeg-turbo, {CROP_WIDTH}-px crop at x=37": lambda d: libjpeg(d, 37, CROP_WIDTH),
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, fn in paths.items():
                started = time.thread_time()
                for _ in range(args.repeats):
                    for data in jpegs:
                        fn(data)
                times[name].append((time.thread_time() - started) / (args.repeats * len(jpegs)) * 1e3)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"frames:  {len(jpegs)} of {args.tsv.name} ({width}x{height}); "
        f"{args.rounds} rounds x {args.repeats} passes\n"
    )
    print("| decode | ms per frame (median) | per round |")
    print("|---|---:|---|")
    for name, values in times.items():
        rounds = " ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {statistics.median(values):.3f} | {rounds} |")
    print(f"\nmax |libjpeg whole - cv2| = {whole_diff}; max |crop - whole frame's columns| = {crop_diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
