"""From stored frames to the model's input: base64 JPEG → RGB → temporal sampling → crop/resize → tensor.

The output of :func:`load_clip` / :class:`ClipTransform` is a float32 tensor (T, 3, size_img, size_img),
ImageNet-normalised ((x/255 - mean) / std), as LAVENDER's datasets produce it. No torchvision: decoding
and resizing use OpenCV, normalisation uses one lookup table per channel (uint8 → float in one pass).

Spatial transforms (reference names, ``img_transform``):

- ``img_rand_crop`` / ``vid_rand_crop`` (train): the short side is resized to ``size_img`` and a random
  ``size_img`` square is cropped. ONE crop position is drawn per clip and used for every frame; the
  reference drew an independent crop per frame for ``img_rand_crop``, available with
  ``per_frame_crop=True``. Eval turns both into a center crop.
- ``img_center_crop`` / ``vid_center_crop``: the same with the center square.
- ``pad_resize``: zero-pad the short side symmetrically by (long - short) // 2 on each side, resize to
  ``size_img`` x ``size_img`` (VIOLET's transform; no augmentation).

The geometry is torchvision's: the long side becomes ``int(size_img * long / short)``, the center crop
starts at ``round(slack / 2)``, a random crop anywhere in ``[0, slack]``. Shrinking by ``AREA_MIN_SHRINK``
or more uses ``cv2.INTER_AREA`` (no aliasing), smaller changes ``cv2.INTER_LINEAR`` (40-50 dB from the
reference's antialiased PIL bilinear on the MSR-VTT sample). Random (train) crops cut the crop's region out
of the stored frame first, rounded to whole source pixels, and resize only that (a 4:3 frame: 25 % fewer
pixels to resize, no copy): the sampling grid moves by at most half a source pixel, which a crop drawn at a
random position makes irrelevant. Center (eval) crops resize first and keep torchvision's exact grid, so
evaluating a reference checkpoint sees the pixels it was evaluated on.

Resizing on the device (``ClipTransform(defer_resize=True)``, train random crops only): the loader returns
the crop's region of the stored frames at their own resolution (the short side whole; 240 x 241 for a
320 x 240 frame and 224 px crops) and the model resizes the batch to ``size_img`` where it runs
(:func:`resize_frames`, the same bilinear / antialiased choice): on a GPU that takes the last per-pixel
CPU pass off the DataLoader workers. The region is centred on the exact crop, so its edges lie within
about 3/4 of a source pixel of it. Clips of one batch whose stored sizes differ are resized to
``size_img`` in the worker when stacked (:func:`lib.data.datasets.stack_clips`), so the model always gets
one size per batch.
"""

from __future__ import annotations

import binascii
import math
import os
import random
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import IO

import cv2
import numpy as np
import pybase64
import torch
import torch.nn.functional as F

from lib.utils.atomic import write_bytes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_MODES = ("img_rand_crop", "img_center_crop", "pad_resize", "vid_rand_crop", "vid_center_crop")
RANDOM_CROP_MODES = ("img_rand_crop", "vid_rand_crop")
AREA_MIN_SHRINK = 1.5  # resize factor from which INTER_AREA replaces INTER_LINEAR
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


# ---------------------------------------------------------------------------------------------- decoding


class _LibjpegWarnings:
    """What libjpeg says while OpenCV decodes: it prints recoverable damage ("Corrupt JPEG data: premature
    end of data segment", "... extraneous bytes before marker") to the C stderr and returns an image anyway,
    half grey or shifted. This catches those lines by pointing file descriptor 2 at a private file for the
    duration of one decode (a lock keeps this process's threads apart; a forked child makes its own file);
    anything else written meanwhile (another thread's output) is passed on to the real stderr."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):  # a child forked mid-decode must not inherit a held lock
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._pid = -1

    def _capture_file(self) -> IO[bytes]:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = tempfile.TemporaryFile(), os.getpid()  # noqa: SIM115 (kept open)
        return self._file

    def decode(self, data: bytes) -> tuple[np.ndarray | None, str]:
        """``cv2.imdecode`` of ``data`` and libjpeg's warnings ("" when none)."""
        with self._lock:
            capture = self._capture_file()
            sys.stderr.flush()
            try:
                saved = os.dup(2)
            except OSError:  # no stderr at all: nothing to listen to
                return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR_RGB), ""
            os.dup2(capture.fileno(), 2)
            try:
                image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR_RGB)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            size = os.fstat(capture.fileno()).st_size
            said = os.pread(capture.fileno(), size, 0) if size else b""
            if size:
                capture.truncate(0)
                capture.seek(0)
        lines = said.decode("utf-8", "replace").splitlines(keepends=True)
        jpeg = [line.strip() for line in lines if _LIBJPEG_WARNING.search(line)]
        others = "".join(line for line in lines if not _LIBJPEG_WARNING.search(line))
        if others:
            os.write(2, others.encode())
        return image, "; ".join(jpeg)


_LIBJPEG_WARNING = re.compile(r"JPEG|jpeg|marker|Huffman|data segment|SOS|SOF|DQT|DHT")
_LIBJPEG = _LibjpegWarnings()


def decode_jpeg(b64: bytes | str) -> np.ndarray:
    """A base64 JPEG → (H, W, 3) uint8 RGB array; ValueError on anything that is not a complete, intact JPEG
    (including damage libjpeg only warns about, e.g. "Corrupt JPEG data: premature end of data segment")."""
    try:
        data = pybase64.b64decode(b64, validate=True)  # SIMD; 8-30x binascii (10 % of a clip's time)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not valid base64 ({len(b64)} chars, starts {b64[:12]!r}): {e}") from None
    if not data.startswith(_JPEG_SOI):
        raise ValueError(f"not a JPEG (starts with bytes {data[:4].hex()}, expected ffd8)")
    if _JPEG_EOI not in data[-32:]:
        raise ValueError(f"JPEG is truncated (no end-of-image marker; {len(data)} bytes)")
    try:
        image, warnings = _LIBJPEG.decode(data)
    except cv2.error as e:
        raise ValueError(f"JPEG could not be decoded: {e}") from None
    if warnings:
        raise ValueError(f"JPEG data is corrupt (libjpeg: {warnings}; {len(data)} bytes)")
    if image is None:
        raise ValueError(f"JPEG could not be decoded ({len(data)} bytes)")
    return image


# ------------------------------------------------------------------------------------ temporal sampling


def sample_frame_indices(
    n_stored: int, size_frame: int, train: bool, rng: random.Random | None = None
) -> list[int]:
    """Which stored frames make the clip (LAVENDER's rule).

    All frames when ``n_stored == size_frame`` or ``n_stored == 1`` (an image stays a one-frame clip).
    Otherwise ``size_clips = ceil(n_stored / size_frame)``; train starts at a random frame in
    ``[0, size_clips)`` and ends at ``min(start + (size_frame - 1) * size_clips, n_stored - 1)``, eval
    spans ``[0, n_stored - 1]``; the ``size_frame`` indices are evenly spaced over that span and rounded.
    With fewer stored frames than ``size_frame`` some indices repeat (the reference crashed there).
    """
    if n_stored < 1:
        raise ValueError("a clip needs at least one stored frame (the row has none)")
    if size_frame < 1:
        raise ValueError(f"size_frame must be >= 1, got {size_frame}")
    if n_stored in (1, size_frame):
        return list(range(n_stored))
    size_clips = math.ceil(n_stored / size_frame)
    if train:
        start = (rng or random).randrange(size_clips)
        end = min(start + (size_frame - 1) * size_clips, n_stored - 1)
    else:
        start, end = 0, n_stored - 1
    return _evenly_spaced(start, end, size_frame)


def _evenly_spaced(start: int, end: int, n: int) -> list[int]:
    if n == 1:
        return [int(round((start + end) / 2))]
    step = (end - start) / (n - 1)
    return [int(round(start + k * step)) for k in range(n)]


# ------------------------------------------------------------------------------------ spatial transforms


def _lookup_tables(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, 256) float32: value v of channel c → (v / 255 - mean[c]) / std[c], computed in float64."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.stack([(v - m) / s for m, s in zip(mean, std)]).astype(np.float32)


_IMAGENET_LUT = _lookup_tables(IMAGENET_MEAN, IMAGENET_STD)


def normalize_clip(clip: np.ndarray, lut: np.ndarray = _IMAGENET_LUT) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB → (T, 3, H, W) float32, ImageNet-normalised, contiguous.

    One channel split of the whole clip, then a per-channel table lookup written straight into the
    output's memory (no intermediate float copies).
    """
    t, h, w, _ = clip.shape
    planes = cv2.split(np.ascontiguousarray(clip).reshape(t * h, w, 3))
    out = np.empty((t, 3, h, w), dtype=np.float32)
    for c in range(3):
        for k in range(t):
            cv2.LUT(planes[c][k * h : (k + 1) * h], lut[c], dst=out[k, c])
    return torch.from_numpy(out)


def _interpolation(src: int, dst: int) -> int:
    return cv2.INTER_AREA if src >= AREA_MIN_SHRINK * dst else cv2.INTER_LINEAR


def _resize_into(image: np.ndarray, out: np.ndarray) -> None:
    """Resize ``image`` to the size of ``out`` and write it there."""
    h, w = out.shape[:2]
    if image.shape[:2] == (h, w):
        out[...] = image
        return
    interpolation = _interpolation(min(image.shape[:2]), min(h, w))
    cv2.resize(image, (w, h), dst=out, interpolation=interpolation)


def _resize_short_side(frame: np.ndarray, size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    short = min(h, w)
    if short == size:
        return frame
    new_w, new_h = (int(size * w / h), size) if h <= w else (size, int(size * h / w))
    return cv2.resize(frame, (new_w, new_h), interpolation=_interpolation(short, size))


def _crop_offset(slack: int, position: float | None) -> int:
    """Center (``position`` None) or ``position`` in [0, 1) mapped uniformly onto [0, slack]."""
    if position is None:
        return int(round(slack / 2))
    return min(int(position * (slack + 1)), slack)


def _crop_square(frame: np.ndarray, size: int, position: float | None) -> np.ndarray:
    h, w = frame.shape[:2]
    top, left = _crop_offset(h - size, position), _crop_offset(w - size, position)
    return frame[top : top + size, left : left + size]


def _crop_on_long_side(frame: np.ndarray, size: int, position: float) -> tuple[int, float, int]:
    """Resizing the short side of ``frame`` to ``size`` and cropping the square at ``position``, seen on
    the long side: the crop's offset in resized pixels, the resized → ``frame`` scale, the long side."""
    h, w = frame.shape[:2]
    short, long = min(h, w), max(h, w)
    resized_long = int(size * long / short)
    return _crop_offset(resized_long - size, position), long / resized_long, long


def _long_side_slice(frame: np.ndarray, start: int, end: int) -> np.ndarray:
    """Rows or columns ``start:end`` of ``frame``'s long side (a view)."""
    return frame[:, start:end] if frame.shape[1] >= frame.shape[0] else frame[start:end]


def _source_crop(frame: np.ndarray, size: int, position: float) -> np.ndarray:
    """The part of ``frame`` that resizing the short side to ``size`` and cropping the square at
    ``position`` keeps, rounded to whole pixels of ``frame`` (a view; resize it to ``size`` x ``size``)."""
    offset, scale, long = _crop_on_long_side(frame, size, position)
    start, end = round(offset * scale), min(long, round((offset + size) * scale))  # each within 1/2 px
    return _long_side_slice(frame, start, end)


def _source_region(frame: np.ndarray, size: int, position: float) -> np.ndarray:
    """The part of ``frame`` that :func:`_source_crop` approximates, with a size that depends only on the
    frame's size (so that clips of equally sized videos stack): the short side whole, the long side
    ``round(size * long / resized_long)`` pixels around the exact crop's centre (a view)."""
    offset, scale, long = _crop_on_long_side(frame, size, position)
    extent = min(long, round(size * scale))
    start = min(max(round((offset + size / 2) * scale - extent / 2), 0), long - extent)  # centred
    return _long_side_slice(frame, start, start + extent)


def resize_clip(clip: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 clip (T, 3, H, W) → (T, 3, size, size) with the loader's resize (OpenCV, in this process)."""
    if tuple(clip.shape[-2:]) == (size, size):
        return clip
    frames = clip.permute(0, 2, 3, 1).numpy()  # (T, H, W, 3); channels-last memory for the loader's clips
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for k, frame in enumerate(frames):
        _resize_into(np.ascontiguousarray(frame), out[k])
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def resize_frames(video: torch.Tensor, size: int) -> torch.Tensor:
    """Frames (..., 3, H, W) of any dtype → float32 (..., 3, size, size), on the tensor's own device.

    Bilinear with half-pixel centres like ``cv2.INTER_LINEAR``; antialiased (torch's area-like filter)
    when shrinking by ``AREA_MIN_SHRINK`` or more, where the loader would use ``cv2.INTER_AREA``. Values
    keep their range (uint8 input gives floats in [0, 255])."""
    h, w = video.shape[-2:]
    flat = video.reshape(-1, *video.shape[-3:]).float()
    antialias = min(h, w) >= AREA_MIN_SHRINK * size
    out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    return out.reshape(*video.shape[:-2], size, size)


def _aspect_window(frame: np.ndarray, hw: tuple[int, int], pad: bool, position: float | None) -> np.ndarray:
    """The part of ``frame`` with the aspect ratio H:W of ``hw`` to resize to ``hw``: the largest such window
    at ``position`` (None: centred) on the axis with room to spare, or (``pad``) the whole frame padded
    with zeros, centred, to that ratio."""
    h, w = frame.shape[:2]
    rows, cols = (h, round(h * hw[1] / hw[0])) if h * hw[1] <= w * hw[0] else (round(w * hw[0] / hw[1]), w)
    if not pad:
        top, left = _crop_offset(h - rows, position), _crop_offset(w - cols, position)
        return frame[top : top + rows, left : left + cols]
    rows, cols = max(h, round(w * hw[0] / hw[1])), max(w, round(h * hw[1] / hw[0]))
    top, left = (rows - h) // 2, (cols - w) // 2
    return cv2.copyMakeBorder(frame, top, rows - h - top, left, cols - w - left, cv2.BORDER_CONSTANT, value=0)


def _pad_to_square(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    pad = abs(w - h) // 2
    if pad == 0:
        return frame
    top_bottom, left_right = (pad, 0) if w > h else (0, pad)
    return cv2.copyMakeBorder(
        frame, top_bottom, top_bottom, left_right, left_right, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )


def normalize_frames(video: torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames (..., 3, H, W) → float32 ImageNet-normalised, on the tensor's own device.

    The same values as :func:`normalize_clip` (to float32 rounding); used by the model on uint8 batches.
    """
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=video.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=video.device).view(shape)
    return (video.float() / 255.0 - mean) / std


class ClipTransform:
    """RGB uint8 frames (H, W, 3) → float32 tensor (T, 3, size_img, size_img), ImageNet-normalised.

    ``normalize=False`` returns the uint8 crops instead, as a (T, 3, H, W) view of channels-last memory:
    the model normalises them on its device (``LavenderModel.encode_video`` takes uint8), which keeps
    float work out of the loader and sends 4x fewer bytes from DataLoader workers and to the GPU.

    ``mode`` is one of :data:`CROP_MODES` (see the module docstring). Random crops happen only with
    ``train=True``; the crop position is drawn once per call (clip) from ``rng`` (or the ``random``
    module, which DataLoader seeds per worker). ``per_frame_crop=True`` (``img_rand_crop`` only) draws
    one position per frame instead, as the reference did.

    ``defer_resize=True`` (with ``normalize=False``) leaves random crops at the stored resolution: the clip
    is the crop's region of the stored frames (its size depends only on theirs), for the model to resize
    on its device (``LavenderConfig.frame_size``). Center crops and ``pad_resize`` are resized as usual.

    ``frame_hw=(H, W)`` makes non-square clips (T, 3, H, W) instead of ``size_img`` squares (LF-VILA trains
    at 192 x 320; the Swin takes any H, W that are multiples of 32). The crop modes then cut the largest
    H:W window of the frame (the other side whole), at the random or centre position, and resize it to H x W;
    ``pad_resize`` pads the frame to H:W (zeros, centred) and resizes. Not with ``defer_resize`` or
    ``per_frame_crop``; the model must not resize (``LavenderConfig.frame_size`` None).
    """

    def __init__(
        self,
        size_img: int,
        train: bool,
        mode: str = "img_rand_crop",
        per_frame_crop: bool = False,
        normalize: bool = True,
        defer_resize: bool = False,
        frame_hw: tuple[int, int] | None = None,
    ):
        if frame_hw is not None and (defer_resize or per_frame_crop or min(frame_hw) < 1):
            raise ValueError(f"frame_hw={frame_hw}: positive (H, W), without defer_resize / per_frame_crop")
        if mode not in CROP_MODES:
            raise ValueError(f"unknown transform {mode!r}; choose one of {', '.join(CROP_MODES)}")
        if size_img < 1:
            raise ValueError(f"size_img must be >= 1, got {size_img}")
        if per_frame_crop and mode != "img_rand_crop":
            raise ValueError(f"per_frame_crop applies to img_rand_crop only, not {mode!r}")
        if defer_resize and normalize:
            raise ValueError(
                "defer_resize needs normalize=False (the model resizes and normalises uint8 clips)"
            )
        self.size_img = size_img
        self.train = train
        self.mode = mode
        self.random_crop = train and mode in RANDOM_CROP_MODES
        self.per_frame_crop = per_frame_crop and self.random_crop
        self.normalize = normalize
        self.defer_resize = defer_resize and self.random_crop
        self.frame_hw = None if frame_hw is None else (int(frame_hw[0]), int(frame_hw[1]))

    def __call__(self, frames: Sequence[np.ndarray], rng: random.Random | None = None) -> torch.Tensor:
        return self.transform_stream(iter(frames), len(frames), rng)

    def transform_stream(
        self, frames: Iterator[np.ndarray], n_frames: int, rng: random.Random | None = None
    ) -> torch.Tensor:
        """Like calling the transform, but frames are consumed one at a time (each can be freed at once:
        lower peak memory, and no large short-lived allocations for the allocator to return to the OS)."""
        if n_frames < 1:
            raise ValueError("a clip needs at least one frame")
        rng = rng or random
        size = self.size_img
        clip: np.ndarray | None = None
        position = rng.random() if self.random_crop else None
        for k in range(n_frames):
            frame = next(frames)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frame {k}: expected an (H, W, 3) uint8 RGB array, got {frame.shape}")
            if clip is None:
                shape = _source_region(frame, size, 0.0).shape[:2] if self.defer_resize else (size, size)
                clip = np.empty((n_frames, *(self.frame_hw or shape), 3), dtype=np.uint8)
            if self.frame_hw is not None:
                pad = self.mode == "pad_resize"
                _resize_into(_aspect_window(frame, self.frame_hw, pad, position), clip[k])
                continue
            if self.mode == "pad_resize":
                _resize_into(_pad_to_square(frame), clip[k])
                continue
            if self.per_frame_crop and k > 0:
                position = rng.random()
            if position is None:
                clip[k] = _crop_square(_resize_short_side(frame, size), size, position)
            elif self.defer_resize:
                _resize_into(_source_region(frame, size, position), clip[k])  # a copy unless sizes differ
            else:
                _resize_into(_source_crop(frame, size, position), clip[k])
        assert clip is not None
        return normalize_clip(clip) if self.normalize else torch.from_numpy(clip).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        extra = (
            (f", frame_hw={self.frame_hw}" if self.frame_hw else "")
            + (", per_frame_crop=True" if self.per_frame_crop else "")
            + ("" if self.normalize else ", normalize=False")
            + (", defer_resize=True" if self.defer_resize else "")
        )
        return f"ClipTransform({self.size_img}, train={self.train}, mode={self.mode!r}{extra})"


def load_clip(
    b64_frames: Sequence[bytes | str],
    size_frame: int,
    transform: ClipTransform,
    train: bool,
    rng: random.Random | None = None,
) -> torch.Tensor:
    """Stored base64 frames of one video → (T, 3, H, W) tensor: sample, decode the picked frames, transform.

    T = ``size_frame`` (or 1 for a one-frame row). A frame that does not decode raises ValueError naming
    its position in the row.
    """
    indices = sample_frame_indices(len(b64_frames), size_frame, train, rng)
    return clip_at(b64_frames, indices, transform, rng)


def clip_at(
    b64_frames: Sequence[bytes | str],
    indices: Sequence[int],
    transform: ClipTransform,
    rng: random.Random | None = None,
) -> torch.Tensor:
    """The clip of the stored frames at ``indices``, in that order (e.g. M clips of a long video,
    :mod:`lib.data.multi_clip`); a repeated index is decoded once."""
    return transform.transform_stream(_decoded(b64_frames, list(indices)), len(indices), rng)


def _decoded(b64_frames: Sequence[bytes | str], indices: list[int]) -> Iterator[np.ndarray]:
    """Decode ``b64_frames[i]`` for each index in turn (a repeated index reuses the previous image)."""
    last, image = None, None
    for i in indices:
        if i != last:
            try:
                image = decode_jpeg(b64_frames[i])
            except ValueError as e:
                raise ValueError(f"frame {i} of {len(b64_frames)}: {e}") from None
            last = i
        yield image


# --------------------------------------------------------------------------------------- visualisation


def render_frame_grid(frames: Sequence[np.ndarray], label: str, columns: int = 5) -> np.ndarray:
    """RGB frames tiled in a grid (each scaled to the first frame's height) under a banner with ``label``."""
    if not frames:
        raise ValueError("no frames to draw")
    height = frames[0].shape[0]
    tiles = [_scale_to_height(f, height) for f in frames]
    width = max(t.shape[1] for t in tiles)
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    banner = 32
    grid = np.full((banner + rows * height, columns * width, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(grid, label, (6, 22), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for k, tile in enumerate(tiles):
        y, x = banner + (k // columns) * height, (k % columns) * width
        grid[y : y + height, x : x + tile.shape[1]] = tile
        for colour, thickness in (((0, 0, 0), 3), ((255, 255, 0), 1)):  # yellow on a dark outline
            cv2.putText(grid, f"#{k}", (x + 4, y + 18), font, 0.5, colour, thickness, cv2.LINE_AA)
    return grid


def _scale_to_height(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=_interpolation(image.shape[0], height))


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB image as PNG atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode {path} as PNG")
    write_bytes(path, encoded.tobytes())
