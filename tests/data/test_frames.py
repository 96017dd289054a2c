"""JPEG decoding, temporal sampling, spatial transforms and load_clip on the reference frames."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lib.data.frames import (
    CROP_MODES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipTransform,
    decode_jpeg,
    load_clip,
    normalize_clip,
    render_frame_grid,
    resize_clip,
    resize_frames,
    sample_frame_indices,
    save_png,
)
from lib.data.tsv import TSVFile, frame_columns

MEAN = np.array(IMAGENET_MEAN, dtype=np.float64)
STD = np.array(IMAGENET_STD, dtype=np.float64)


@pytest.fixture(scope="module")
def ref_rows(msrvtt_sample: Path) -> list[list[bytes]]:
    tsv = TSVFile(msrvtt_sample / "msrvtt.tsv")
    return [frame_columns(tsv.row(i)) for i in range(len(tsv))]


def normalised(rgb: np.ndarray) -> np.ndarray:
    """Reference normalisation in float64: (H, W, 3) uint8 → (3, H, W)."""
    return ((rgb / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    return float(10 * np.log10(peak**2 / np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


# -------------------------------------------------------------------------------------------- decoding


def test_decode_reference_frames_as_rgb(ref_rows) -> None:
    b64 = ref_rows[0][2]
    image = decode_jpeg(b64)
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    via_pil = np.array(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
    assert np.abs(image.astype(int) - via_pil).mean() < 1.0, "channels must be RGB, like PIL"
    assert np.array_equal(decode_jpeg(b64.decode()), image)


def test_decode_pure_colour_is_rgb() -> None:
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    b64 = base64.b64encode(cv2.imencode(".jpg", bgr)[1].tobytes())
    r, g, b = decode_jpeg(b64)[8, 8]
    assert r > 240 and g < 15 and b < 15


def test_decode_rejects_bad_data(ref_rows) -> None:
    good = ref_rows[0][0]
    png = base64.b64encode(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    cases = {
        b"not base64 at all!": "not valid base64",
        good[:-5]: "not valid base64",  # bad padding
        good[: len(good) // 2 // 4 * 4]: "truncated",
        png: "not a JPEG",
        b"": "not a JPEG",
    }
    for data, match in cases.items():
        with pytest.raises(ValueError, match=match):
            decode_jpeg(data)


# ----------------------------------------------------------------------------------- temporal sampling


def test_eval_sampling_matches_reference_rule() -> None:
    assert sample_frame_indices(32, 5, train=False) == [0, 8, 16, 23, 31]  # step 7.75, round half to even
    assert sample_frame_indices(5, 5, train=False) == [0, 1, 2, 3, 4]
    assert sample_frame_indices(5, 5, train=True) == [0, 1, 2, 3, 4]
    assert sample_frame_indices(1, 5, train=True) == [0], "an image stays a one-frame clip"
    assert sample_frame_indices(10, 4, train=False) == [0, 3, 6, 9]
    assert sample_frame_indices(7, 1, train=False) == [3]


def test_fewer_stored_frames_repeat_indices() -> None:
    assert sample_frame_indices(3, 5, train=False) == [0, 0, 1, 2, 2]
    assert sample_frame_indices(2, 4, train=True, rng=random.Random(0)) == [0, 0, 1, 1]


def test_train_sampling_random_segment_start() -> None:
    n, size = 32, 5  # size_clips = 7: starts 0..6, span (size-1)*7 = 28 frames, clipped at 31
    seen = set()
    for seed in range(200):
        idx = sample_frame_indices(n, size, train=True, rng=random.Random(seed))
        start = idx[0]
        assert 0 <= start < 7 and len(idx) == size and idx == sorted(idx)
        expected_end = min(start + 28, 31)
        assert idx[-1] == expected_end
        step = (expected_end - start) / 4
        assert idx == [int(round(start + k * step)) for k in range(5)]
        seen.add(start)
    assert seen == set(range(7))
    a = sample_frame_indices(n, size, True, random.Random(5))
    assert a == sample_frame_indices(n, size, True, random.Random(5))


def test_sampling_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one stored frame"):
        sample_frame_indices(0, 5, train=False)
    with pytest.raises(ValueError, match="size_frame"):
        sample_frame_indices(5, 0, train=False)


# ----------------------------------------------------------------------------------- spatial transforms


def test_normalize_clip_matches_float64_reference() -> None:
    clip = np.random.default_rng(0).integers(0, 256, (3, 8, 9, 3), dtype=np.uint8)
    out = normalize_clip(clip)
    assert out.shape == (3, 3, 8, 9) and out.dtype == torch.float32 and out.is_contiguous()
    expected = np.stack([normalised(frame) for frame in clip])
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def _three_band_frame(height: int = 100, side: int = 30) -> np.ndarray:
    """Red | blue | green vertical bands; the blue band is the centered square of the frame."""
    frame = np.zeros((height, height + 2 * side, 3), np.uint8)
    frame[:, :side] = (255, 0, 0)
    frame[:, side : side + height] = (0, 0, 255)
    frame[:, side + height :] = (0, 255, 0)
    return frame


def test_center_crop_keeps_the_center_square() -> None:
    frame = _three_band_frame()
    tall = np.ascontiguousarray(frame.transpose(1, 0, 2))
    blue = normalised(np.full((50, 50, 3), (0, 0, 255), np.uint8))
    center_modes = [("img_center_crop", True), ("vid_center_crop", True)]
    eval_modes = [(mode, False) for mode in CROP_MODES if mode != "pad_resize"]  # eval: random → center
    for mode, train in center_modes + eval_modes:
        for image in (frame, tall):
            out = ClipTransform(50, train=train, mode=mode)([image])
            np.testing.assert_allclose(out[0].numpy(), blue, atol=1e-5, err_msg=f"{mode} train={train}")


def test_random_crop_is_shared_by_the_clip_unless_per_frame() -> None:
    ramp = np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (100, 1, 3))  # value = column
    frames = [ramp] * 8
    shared = ClipTransform(100, train=True)(frames, random.Random(1))
    assert all(torch.equal(shared[0], shared[k]) for k in range(8))
    lefts = set()
    for seed in range(40):
        out = ClipTransform(100, train=True)(frames, random.Random(seed))
        lefts.add(round(float(out[0, 0, 0, 0]) * STD[0] * 255 + MEAN[0] * 255))  # = crop offset
    assert min(lefts) >= 0 and max(lefts) <= 100 and max(lefts) - min(lefts) > 50 and len(lefts) > 20
    per_frame = ClipTransform(100, train=True, per_frame_crop=True)(frames, random.Random(1))
    assert any(not torch.equal(per_frame[0], per_frame[k]) for k in range(8))
    with pytest.raises(ValueError, match="per_frame_crop applies to img_rand_crop only"):
        ClipTransform(100, train=True, mode="vid_rand_crop", per_frame_crop=True)


def test_center_crop_geometry_is_torchvisions(ref_rows) -> None:
    """Resize the short side to 224 (long side int(224*320/240) = 298), crop 224 at round(74/2) = 37."""
    for b64 in ref_rows[3]:
        frame = decode_jpeg(b64)
        resized = cv2.resize(frame, (298, 224), interpolation=cv2.INTER_LINEAR)
        ours = ClipTransform(224, train=False, mode="img_center_crop")([frame])[0].numpy()
        np.testing.assert_allclose(ours, normalised(resized[:, 37:261]), atol=1e-5)
        reference = np.array(Image.fromarray(frame).resize((298, 224), Image.BILINEAR))[
            :, 37:261
        ]  # torchvision
        assert psnr(ours, normalised(reference), peak=1 / 0.225) > 40


def test_random_crop_cuts_the_same_region_as_resize_then_crop(ref_rows) -> None:
    """Train crops resize only the crop's region of the stored frame: at every position they match
    resize-then-crop (torchvision's order) better than the crop one pixel over does."""
    frames = [decode_jpeg(b64) for b64 in ref_rows[3]]
    for image in (frames[0], np.ascontiguousarray(frames[1].transpose(1, 0, 2))):  # wide and tall
        for seed in range(12):
            position = random.Random(seed).random()
            ours = ClipTransform(224, train=True)([image], random.Random(seed))[0].numpy()
            resized = cv2.resize(image, (298, 224) if image.shape[1] > image.shape[0] else (224, 298))
            offset = min(int(position * 75), 74)  # slack 298 - 224 = 74
            wide = image.shape[1] > image.shape[0]
            crops = (resized[:, o : o + 224] if wide else resized[o : o + 224] for o in (offset, offset ^ 1))
            crop, neighbour = crops
            closeness = psnr(ours, normalised(crop), peak=1 / 0.225)
            assert closeness > 25 and closeness > psnr(neighbour, crop, peak=255) + 5, (seed, offset)
    ramp = np.tile((np.arange(400) // 2).astype(np.uint8)[None, :, None], (100, 1, 3))  # value = column / 2
    for seed in range(20):
        position = random.Random(seed).random()
        out = ClipTransform(50, train=True)([ramp], random.Random(seed))[0].numpy()  # 100 x 400 -> 50 x 200
        left = round(float(out[0, 0, 0]) * STD[0] * 255 + MEAN[0] * 255)  # = source column / 2 = resized col
        assert abs(left - min(int(position * 151), 150)) <= 1


def test_deferred_random_crop_is_the_stored_region_the_device_resizes(ref_rows) -> None:
    """defer_resize leaves a train crop at the stored resolution (240 x round(224 * 320 / 298) = 241 pixels,
    centred on the exact crop); resized on the device it matches resize-then-crop (torchvision's order)
    far better than the crop one pixel over does, and where the worker's crop has the same size, exactly
    as well as the worker's."""
    frames = [decode_jpeg(b64) for b64 in ref_rows[3]]
    for clip_frames in (frames, [np.ascontiguousarray(f.transpose(1, 0, 2)) for f in frames]):  # wide, tall
        wide = clip_frames[0].shape[1] > clip_frames[0].shape[0]
        resized = cv2.resize(clip_frames[0], (298, 224) if wide else (224, 298))
        same_as_worker = 0
        for seed in range(12):
            transform = ClipTransform(224, True, normalize=False, defer_resize=True)
            deferred = transform(clip_frames, random.Random(seed))
            assert deferred.shape == ((5, 3, 240, 241) if wide else (5, 3, 241, 240))
            assert deferred.dtype == torch.uint8
            offset = min(int(random.Random(seed).random() * 75), 74)  # slack 298 - 224 = 74
            start = min(round((offset + 112) * 320 / 298 - 120.5), 320 - 241)
            region = clip_frames[0][:, start : start + 241] if wide else clip_frames[0][start : start + 241]
            assert np.array_equal(deferred[0].permute(1, 2, 0).numpy(), region)
            on_device = resize_frames(deferred, 224).round().clamp(0, 255)[0].permute(1, 2, 0).numpy()
            worker = ClipTransform(224, True, normalize=False)(clip_frames, random.Random(seed))
            crop, neighbour = (
                resized[:, o : o + 224] if wide else resized[o : o + 224] for o in (offset, offset ^ 1)
            )
            closeness = psnr(on_device, crop, peak=255)
            assert closeness > 30 and closeness > psnr(neighbour, crop, peak=255) + 4, (seed, offset)
            same_as_worker += abs(closeness - psnr(worker[0].permute(1, 2, 0).numpy(), crop, peak=255)) < 0.5
        assert same_as_worker >= 6
    center = ClipTransform(224, False, normalize=False, defer_resize=True)(frames)
    assert center.shape == (5, 3, 224, 224)  # eval crops keep torchvision's grid, resized in the loader
    with pytest.raises(ValueError, match="defer_resize needs normalize=False"):
        ClipTransform(224, True, defer_resize=True)


def test_stack_clips_resizes_deferred_clips_only_when_their_sizes_differ(ref_rows) -> None:
    """Deferred clips of equally sized videos stack at the stored size (the model resizes them); a batch
    mixing stored sizes is resized to ``resize_to`` in the worker; other mixed batches are an error."""
    from lib.data.datasets import stack_clips

    frames = [decode_jpeg(b64) for b64 in ref_rows[3]]
    large = [cv2.resize(f, (640, 480)) for f in frames]
    deferred = ClipTransform(224, True, normalize=False, defer_resize=True)
    a, b, c = deferred(frames), deferred(frames, random.Random(1)), deferred(large)
    items = [{"id": v, "video": clip, "resize_to": 224} for v, clip in (("a", a), ("b", b), ("c", c))]
    same = stack_clips(items[:2])
    assert same.shape == (2, 5, 3, 240, 241) and torch.equal(same[1], b)
    mixed = stack_clips(items)
    assert mixed.shape == (3, 5, 3, 224, 224)
    assert torch.equal(mixed[0], resize_clip(a, 224)) and torch.equal(mixed[2], resize_clip(c, 224))
    with pytest.raises(ValueError, match=r"differ in shape .* \(videos \['a', 'b', 'c'\]\)"):
        stack_clips([{k: v for k, v in item.items() if k != "resize_to"} for item in items])


def test_device_resize_matches_the_loaders_resize() -> None:
    """resize_frames (torch, any device) agrees with the loader's OpenCV resize: bilinear for small changes,
    antialiased (area-like) from AREA_MIN_SHRINK on; resize_clip is the loader's resize on a uint8 clip."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 240, 240, 3), dtype=np.uint8)
    smooth = np.stack([cv2.GaussianBlur(frame, (0, 0), 2) for frame in noise])
    clip = torch.from_numpy(smooth).permute(0, 3, 1, 2)  # (T, 3, H, W) view of channels-last memory
    for size in (224, 100, 64):
        by_cv2 = resize_clip(clip, size)
        assert by_cv2.shape == (4, 3, size, size) and by_cv2.dtype == torch.uint8
        by_torch = resize_frames(clip[None], size)[0]
        assert by_torch.dtype == torch.float32
        assert psnr(by_torch.numpy(), by_cv2.float().numpy(), peak=255) > 38, size
    assert resize_clip(clip, 240) is clip


def test_pad_resize_adds_symmetric_black_bands() -> None:
    white = np.full((240, 320, 3), 255, np.uint8)
    out = ClipTransform(224, train=True, mode="pad_resize")([white])[0].numpy()
    black = normalised(np.zeros((1, 1, 3), np.uint8))
    full = normalised(white[:1, :1])
    band = 224 * 40 // 320  # 40 px of padding above and below the 240 rows, in a 320 x 320 square
    for rows, value in [
        (slice(0, band - 1), black),
        (slice(band + 1, 223 - band), full),
        (slice(225 - band, 224), black),
    ]:
        np.testing.assert_allclose(out[:, rows], np.broadcast_to(value, out[:, rows].shape), atol=1e-5)


def test_resizes_small_and_large_frames_and_mixed_sizes() -> None:
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(90, 120, 3), (720, 1280, 3), (224, 224, 3)]
    ]
    out = ClipTransform(224, train=True)(frames, random.Random(0))
    assert out.shape == (3, 3, 224, 224)
    np.testing.assert_allclose(
        out[2].numpy(), normalised(frames[2]), atol=1e-5
    )  # already the size: untouched


def test_transform_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown transform 'flip'"):
        ClipTransform(224, True, mode="flip")
    with pytest.raises(ValueError, match="at least one frame"):
        ClipTransform(224, True)([])
    with pytest.raises(ValueError, match="frame 0: expected an"):
        ClipTransform(224, True)([np.zeros((10, 10), np.uint8)])
    assert set(CROP_MODES) == {
        "img_rand_crop",
        "img_center_crop",
        "pad_resize",
        "vid_rand_crop",
        "vid_center_crop",
    }


# --------------------------------------------------------------------------------------------- load_clip


def test_load_clip_on_reference_rows(ref_rows) -> None:
    eval_transform = ClipTransform(224, train=False, mode="img_center_crop")
    clip = load_clip(ref_rows[0], 5, eval_transform, train=False)
    assert clip.shape == (5, 3, 224, 224) and clip.dtype == torch.float32
    expected = eval_transform([decode_jpeg(b) for b in ref_rows[0]])
    assert torch.equal(clip, expected)
    three = load_clip(ref_rows[0], 3, eval_transform, train=False)  # frames 0, 2, 4
    assert torch.equal(three, expected[[0, 2, 4]])
    train = ClipTransform(224, train=True)
    a = load_clip(ref_rows[1], 4, train, train=True, rng=random.Random(3))
    b = load_clip(ref_rows[1], 4, train, train=True, rng=random.Random(3))
    assert a.shape == (4, 3, 224, 224) and torch.equal(a, b)
    assert float(a.min()) > -2.2 and float(a.max()) < 2.7


def test_load_clip_repeats_when_too_few_frames(ref_rows) -> None:
    clip = load_clip(ref_rows[2][:2], 4, ClipTransform(64, train=False), train=False)
    assert (
        torch.equal(clip[0], clip[1]) and torch.equal(clip[2], clip[3]) and not torch.equal(clip[0], clip[3])
    )


def test_load_clip_names_the_bad_frame(ref_rows) -> None:
    frames = list(ref_rows[0])
    frames[3] = frames[3][:100]
    with pytest.raises(ValueError, match="frame 3 of 5"):
        load_clip(frames, 5, ClipTransform(224, train=False), train=False)


def test_frame_grid_png(ref_rows, tmp_path: Path) -> None:
    frames = [decode_jpeg(b) for b in ref_rows[0]]
    grid = render_frame_grid(frames, "video7017", columns=3)
    assert grid.shape == (32 + 2 * 240, 3 * 320, 3)
    assert np.array_equal(grid[32 : 32 + 240, 320 + 40 : 640], frames[1][:, 40:])
    assert (grid[:32] < 128).any(), "the label is drawn on the banner"
    save_png(tmp_path / "g.png", grid)
    assert np.array_equal(cv2.imread(str(tmp_path / "g.png"))[..., ::-1], grid)
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]
