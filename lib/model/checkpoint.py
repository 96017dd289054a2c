"""Weights in and out: reference checkpoints, Video Swin, Hugging Face BERT folders, and our model directory.

Sources understood:

* LAVENDER / VIOLET checkpoints (plain ``torch.save(state_dict)``; ``module.`` prefixes,
  ``state_dict``/``model`` wrappers, stale ``position_ids`` buffers and foreign heads such as VIOLET's
  ``fc_mvm`` are handled and reported).
* SwinBERT checkpoints (keys remapped as in the reference's ``load_SwinBERT_weight``).
* Video Swin Kinetics ``.pth`` (``state_dict`` wrapper, ``backbone.`` prefix) and 2-D ImageNet Swin (``model``
  wrapper), the latter inflated to 3-D.
* A local Hugging Face BERT folder (config.json + model.safetensors / pytorch_model.bin); nothing is
  downloaded.
* Our own format: a directory with ``config.json`` (a :class:`LavenderConfig`) and ``model.safetensors``.

Every loader returns a :class:`LoadReport`. A missing file is a ``FileNotFoundError``; a shape that cannot be
reconciled, an unexpected key or a missing key (with ``strict=True``) is a :class:`CheckpointError` whose
message carries the full report. Nothing is skipped silently.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from lib.utils.atomic import write_atomic_path, write_text
from lib.utils.files import read_json

from .lavender import LavenderConfig, LavenderModel
from .video_swin import SwinTransformer3D

StateDict = dict[str, torch.Tensor]

MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
DERIVED_BUFFERS = ("position_ids", "token_type_ids", "relative_position_index", "attn_mask")
"""Suffixes of buffers the model recomputes; dropped from checkpoints (persistence varies by version)."""
HEAD_BIAS = "fc_mtm.predictions.bias"
DECODER_BIAS = "fc_mtm.predictions.decoder.bias"  # the same parameter as HEAD_BIAS (HF ties them)
FOREIGN_HEAD = re.compile(r"^fc(_[\w\-]+)?\.\d+\.(weight|bias)$")
"""Task-specific MLP heads of the reference (``fc.1.*``, ``fc_mvm.3.*``, ``fc_<task>.1.*``): not LAVENDER."""
OPTIONAL_KEYS = {
    "violet": ("enc_img.emb_odr", "emb_task"),
    "lavender": ("enc_img.emb_odr", "emb_task"),
    "swinbert": (
        "enc_img.emb_cls",
        "enc_img.emb_pos",
        "enc_img.emb_len",
        "enc_img.emb_odr",
        "enc_img.norm.weight",
        "enc_img.norm.bias",
        "emb_task",
    ),
}
"""Model keys a layout may lack; they keep their initial values and are reported under ``initialised``."""
SWINBERT_PREFIXES = (
    ("swin.backbone.", "enc_img.swin."),
    ("trans_encoder.bert.encoder.", "trsfr."),
    ("trans_encoder.bert.embeddings.", "enc_txt.emb_txt."),
    ("trans_encoder.bert.img_embedding.", "enc_img.img_embedding."),
    ("trans_encoder.cls.", "fc_mtm."),
    ("fc.", "enc_img.fc."),
)
SWINBERT_LEFTOVERS = ("trans_encoder.", "learn_vid_att.", "swin.cls_head.")
REFERENCE_BERTS: dict[str, dict[str, int]] = {
    "bert-base-uncased": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072},
    "bert-large-uncased": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 4096},
}


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (unexpected/missing keys, shapes); the message holds the report."""


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What a load did. ``missing`` and ``unexpected`` are problems; the other lists are informational."""

    source: str
    layout: str = ""
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # model keys absent from the checkpoint, left at init
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model has no place for
    initialised: list[str] = field(
        default_factory=list
    )  # model keys this layout legitimately lacks (kept at init)
    ignored: list[str] = field(
        default_factory=list
    )  # known foreign keys deliberately not loaded (other heads)
    dropped: list[str] = field(default_factory=list)  # derived buffers the model recomputes
    resized: list[str] = field(default_factory=list)  # interpolated parameters, "key: old -> new"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected)

    def __str__(self) -> str:
        lines = [
            f"loaded {self.loaded} tensors from {self.source}"
            + (f" (layout: {self.layout})" if self.layout else "")
        ]
        for name in ("missing", "unexpected", "initialised", "ignored", "dropped", "resized", "notes"):
            items = getattr(self, name)
            if items:
                shown = ", ".join(items[:12]) + (
                    f", ... (+{len(items) - 12} more)" if len(items) > 12 else ""
                )
                lines.append(f"  {name} ({len(items)}): {shown}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------------


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> StateDict:
    """Tensors of a checkpoint file (.pt/.pth/.bin/.safetensors) or of our model directory, unwrapped.

    ``torch.load`` runs with ``weights_only=True`` unless ``trust_pickle`` (only for files you trust: a pickle
    can run code). ``module.`` prefixes (DDP / DataParallel) are stripped.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            obj: Any = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors' errors do not name the file
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({type(err).__name__}: {err}); it is damaged or "
                "was cut short while copying or writing: copy or save it again"
            ) from None
    elif not looks_like_torch_save(path):
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (neither torch.save's zip format nor a pickle; "
            f"{path.stat().st_size} bytes): it is damaged, cut short or of another format"
        )
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
        except Exception as err:  # noqa: BLE001 - re-raised with the file name and the way out
            if trust_pickle:
                raise
            raise CheckpointError(
                f"{path}: torch.load(weights_only=True) refused it ({err}). A checkpoint is never unpickled "
                "here (a pickle can run code). If you trust this file, convert it once into a safetensors "
                f"model folder: python _tools/convert_checkpoint.py --src {path} --config ARGS.json --out "
                "FOLDER --trust-pickle; then use FOLDER (--path_ckpt FOLDER, --ckpt FOLDER, "
                "Lavender.from_pretrained(FOLDER))."
            ) from err
    return strip_module_prefix(unwrap_state_dict(obj, str(path)))


def looks_like_torch_save(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` file: a zip archive (the format since PyTorch 1.6) or a
    pickle (the legacy format and plain pickles; ``torch.load`` decides what is inside)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def unwrap_state_dict(obj: Any, source: str) -> StateDict:
    """The tensor dict inside a checkpoint: itself, or its ``state_dict`` / ``model`` / ``module`` entry."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if not isinstance(obj, Mapping):
            break
        inner = next(
            (obj[k] for k in ("state_dict", "model", "module") if isinstance(obj.get(k), Mapping)), None
        )
        if inner is None:
            break
        obj = inner
    found = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{source}: no state_dict of tensors found (top level: {found})")


def strip_module_prefix(sd: StateDict) -> StateDict:
    out = {}
    for key, value in sd.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def shape_mismatches(sd: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> list[str]:
    """Lines "key: checkpoint (shape) vs model (shape)" for every shared key whose shapes differ."""
    return [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in sd.items()
        if k in target and v.shape != target[k].shape
    ]


def drop_derived_buffers(sd: StateDict, keep: Iterable[str] = ()) -> tuple[StateDict, list[str]]:
    keep = set(keep)
    dropped = [k for k in sd if k.rsplit(".", 1)[-1] in DERIVED_BUFFERS and k not in keep]
    return {k: v for k, v in sd.items() if k not in dropped}, dropped


# ----------------------------------------------------------------------------------------------------
# Interpolating the visual embeddings
# ----------------------------------------------------------------------------------------------------


def resize_emb_pos(
    emb_pos: torch.Tensor, max_size_patch: int, trained_grid: int | None = None
) -> torch.Tensor:
    """(1, 1, 1+P*P, D) -> (1, 1, 1+M*M, D): the cls slot kept, the patch grid resized bicubically.

    The reference adds the FIRST 1+h*w slots for an h x w map, so only those were trained; pass
    ``trained_grid`` = h (e.g. 7 for 224 px) to resize just that square instead of the whole P x P table.
    """
    slots, d = emb_pos.shape[2] - 1, emb_pos.shape[3]
    side = trained_grid or math.isqrt(slots)
    if side * side > slots or (trained_grid is None and side * side != slots):
        raise CheckpointError(f"emb_pos with {slots + 1} slots has no {side}x{side} patch grid")
    cls = emb_pos[:, :, :1]
    grid = emb_pos[0, 0, 1 : 1 + side * side].float().reshape(side, side, d).permute(2, 0, 1)[None]
    grid = F.interpolate(grid, size=(max_size_patch, max_size_patch), mode="bicubic", align_corners=False)
    grid = grid[0].permute(1, 2, 0).reshape(1, 1, max_size_patch**2, d).to(emb_pos.dtype)
    return torch.cat([cls, grid], dim=2)


def resize_emb_len(
    emb_len: torch.Tensor, max_size_frame: int, trained_frames: int | None = None
) -> torch.Tensor:
    """(1, F, 1, D) -> (1, M, 1, D) by linear interpolation over frames (first and last slot kept).

    As with :func:`resize_emb_pos`, ``trained_frames`` restricts the source to the slots actually trained.
    """
    frames = trained_frames or emb_len.shape[1]
    if frames > emb_len.shape[1]:
        raise CheckpointError(f"emb_len has {emb_len.shape[1]} slots, fewer than trained_frames={frames}")
    seq = emb_len[0, :frames, 0].float().t()[None]  # (1, D, F)
    if frames == 1:
        seq = seq.expand(-1, -1, max_size_frame)
    else:
        seq = F.interpolate(seq, size=max_size_frame, mode="linear", align_corners=True)
    return seq[0].t()[None, :, None].to(emb_len.dtype)


# ----------------------------------------------------------------------------------------------------
# LAVENDER / VIOLET / SwinBERT checkpoints
# ----------------------------------------------------------------------------------------------------


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """Layout of a state_dict: "swinbert", "violet" (no emb_task, or an fc_mvm head) or "lavender"."""
    if any(k.startswith(("swin.backbone.", "trans_encoder.")) for k in sd):
        return "swinbert"
    if "emb_task" not in sd or any(k.startswith("fc_mvm.") for k in sd):
        return "violet"
    return "lavender"


def remap_swinbert(sd: StateDict, report: LoadReport) -> StateDict:
    """SwinBERT names -> ours; its fc (1024->512) and img_embedding (512->D) are composed into enc_img.fc."""
    out: StateDict = {}
    for key, value in sd.items():
        for old, new in SWINBERT_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    w_fc, w_emb = out.pop("enc_img.fc.weight", None), out.pop("enc_img.img_embedding.weight", None)
    b_fc, b_emb = out.pop("enc_img.fc.bias", None), out.pop("enc_img.img_embedding.bias", None)
    if w_fc is not None and w_emb is not None:
        out["enc_img.fc.weight"] = w_emb.float() @ w_fc.float()
        bias = w_emb.float() @ (b_fc.float() if b_fc is not None else torch.zeros(w_fc.shape[0]))
        out["enc_img.fc.bias"] = bias + (b_emb.float() if b_emb is not None else 0.0)
        report.notes.append(
            f"SwinBERT fc {tuple(w_fc.shape)} and img_embedding {tuple(w_emb.shape)} composed into "
            "enc_img.fc (SwinBERT's zero cls tokens / missing pos-len embeddings are not reproduced: "
            "emb_* stay at init)"
        )
    else:
        for key, value in (("enc_img.fc.weight", w_fc), ("enc_img.fc.bias", b_fc)):
            if value is not None:
                out[key] = value
    return out


def _resizable(sd: StateDict, target: Mapping[str, torch.Tensor], key: str, axis: int) -> bool:
    """True when ``key`` differs from the model's only along ``axis`` (other mismatches are shape errors)."""
    if key not in sd or key not in target or sd[key].shape == target[key].shape or sd[key].ndim != 4:
        return False
    return all(a == b for i, (a, b) in enumerate(zip(sd[key].shape, target[key].shape)) if i != axis)


def resize_visual_embeddings(
    sd: StateDict,
    target: Mapping[str, torch.Tensor],
    trained_grid: int | None = None,
    trained_frames: int | None = None,
) -> list[str]:
    """Resize ``enc_img.emb_pos`` / ``enc_img.emb_len`` in ``sd`` (in place) to the model's; describe it."""
    done = []
    pos, frames = "enc_img.emb_pos", "enc_img.emb_len"
    if _resizable(sd, target, pos, axis=2):
        old = tuple(sd[pos].shape)
        sd[pos] = resize_emb_pos(sd[pos], math.isqrt(target[pos].shape[2] - 1), trained_grid)
        used = f", from the {trained_grid}x{trained_grid} trained slots" if trained_grid else ""
        done.append(f"{pos}: {old} -> {tuple(sd[pos].shape)}{used}")
    if _resizable(sd, target, frames, axis=1):
        old = tuple(sd[frames].shape)
        sd[frames] = resize_emb_len(sd[frames], target[frames].shape[1], trained_frames)
        used = f", from the {trained_frames} trained slots" if trained_frames else ""
        done.append(f"{frames}: {old} -> {tuple(sd[frames].shape)}{used}")
    return done


def prepare_state_dict(
    sd: StateDict,
    model: nn.Module,
    source: str,
    trained_grid: int | None = None,
    trained_frames: int | None = None,
) -> tuple[StateDict, LoadReport]:
    """Map a reference-layout state_dict onto ``model``'s keys; resize emb_pos/emb_len; build the report.

    Raises :class:`CheckpointError` for shapes that cannot be reconciled.
    """
    sd = strip_module_prefix(sd)
    report = LoadReport(source=source, layout=detect_layout(sd))
    if report.layout == "swinbert":
        sd = remap_swinbert(sd, report)
    target = model.state_dict()
    sd, report.dropped = drop_derived_buffers(sd, keep=target)
    if HEAD_BIAS in sd or DECODER_BIAS in sd:
        bias = sd.get(HEAD_BIAS, sd.get(DECODER_BIAS))
        both = HEAD_BIAS in sd and DECODER_BIAS in sd and not bias.is_meta  # meta: shape checks only
        if both and not torch.equal(sd[HEAD_BIAS], sd[DECODER_BIAS]):
            report.notes.append(
                f"{DECODER_BIAS} differs from {HEAD_BIAS}; using {HEAD_BIAS} (one parameter in HF)"
            )
        sd[HEAD_BIAS] = sd[DECODER_BIAS] = bias  # type: ignore[assignment]
    report.resized = resize_visual_embeddings(sd, target, trained_grid, trained_frames)
    report.resized += resize_temporal_biases(sd, target, model)
    optional = set(OPTIONAL_KEYS[report.layout])
    for key in list(sd):
        if key in target:
            continue
        if FOREIGN_HEAD.match(key) or (report.layout == "swinbert" and key.startswith(SWINBERT_LEFTOVERS)):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
        del sd[key]
    for key in target:
        if key not in sd:
            (report.initialised if key in optional else report.missing).append(key)
    mismatched = shape_mismatches(sd, target)
    if mismatched:
        raise CheckpointError(
            f"{source}: shapes do not match the model config:\n  " + "\n  ".join(mismatched) + f"\n{report}"
        )
    report.loaded = len(sd)
    return sd, report


def load_checkpoint(
    model: LavenderModel,
    src: str | Path | Mapping[str, torch.Tensor],
    strict: bool = True,
    trained_grid: int | None = None,
    trained_frames: int | None = None,
    trust_pickle: bool = False,
) -> LoadReport:
    """Load a LAVENDER / VIOLET / SwinBERT checkpoint (file, our directory, or a state_dict) into ``model``.

    ``strict``: unexpected keys or missing keys (beyond those a layout legitimately lacks) raise
    :class:`CheckpointError`; otherwise they are only reported. Shape errors always raise.
    """
    source = str(src) if isinstance(src, (str, Path)) else "<state_dict>"
    sd = read_state_dict(src, trust_pickle) if isinstance(src, (str, Path)) else dict(src)
    sd, report = prepare_state_dict(sd, model, source, trained_grid, trained_frames)
    if strict and not report.ok:
        raise CheckpointError(
            f"{source} does not fit the model (pass strict=False to load anyway):\n{report}"
        )
    result = model.load_state_dict(sd, strict=False)
    if set(result.missing_keys) != set(report.missing + report.initialised) or result.unexpected_keys:
        raise AssertionError(
            f"load report out of sync with load_state_dict: {result}"
        )  # a bug here, not in the file
    return report


# ----------------------------------------------------------------------------------------------------
# Video Swin: Kinetics 3-D checkpoints and inflated 2-D ImageNet checkpoints
# ----------------------------------------------------------------------------------------------------


def inflate_2d_swin(sd: StateDict, swin: SwinTransformer3D, report: LoadReport) -> StateDict:
    """2-D Swin weights -> 3-D.

    The patch kernel is repeated over time and divided by its length; each relative-position table is resized
    bicubically to the 3-D window's (2Wh-1)x(2Ww-1) plane and tiled over the 2Wd-1 depth offsets.
    """
    out = dict(sd)
    kernel = out.get("patch_embed.proj.weight")
    if kernel is not None and kernel.ndim == 4:
        depth = swin.patch_size[0]
        out["patch_embed.proj.weight"] = kernel.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
    for key, table in sd.items():
        if not key.endswith("relative_position_bias_table"):
            continue
        wd, wh, ww = _block_window(swin, key)
        side = math.isqrt(table.shape[0])
        if side * side != table.shape[0]:
            raise CheckpointError(
                f"{report.source}: {key} {tuple(table.shape)} is not a square 2-D bias table"
            )
        plane = table.float().t().reshape(1, -1, side, side)
        if side != 2 * wh - 1 or side != 2 * ww - 1:
            plane = F.interpolate(plane, size=(2 * wh - 1, 2 * ww - 1), mode="bicubic", align_corners=False)
            report.resized.append(f"{key}: {side}x{side} -> {2 * wh - 1}x{2 * ww - 1} (bicubic)")
        out[key] = plane.reshape(table.shape[1], -1).t().repeat(2 * wd - 1, 1).to(table.dtype)
    depths = sorted({2 * w[0] - 1 for w in getattr(swin, "stage_windows", [swin.window_size])})
    report.notes.append(
        f"inflated from 2-D: patch kernel repeated over {swin.patch_size[0]} frames, "
        f"bias tables tiled x{'/'.join(map(str, depths))}"
    )
    return out


def _block_window(model: nn.Module, key: str) -> tuple[int, int, int]:
    """The window of the attention module owning a bias-table ``key`` (the model's base window if absent)."""
    try:
        return tuple(model.get_submodule(key.rsplit(".", 1)[0]).window_size)  # type: ignore[return-value]
    except AttributeError:
        return tuple(model.window_size)  # type: ignore[return-value]


def resize_temporal_bias(table: torch.Tensor, depth_to: int, plane: int) -> torch.Tensor:
    """A relative-position bias table ((2Wd-1) * plane, heads) for another temporal window: rows
    ((2Wd'-1) * plane, heads). Time offsets both windows have keep their biases exactly; offsets beyond the
    source's repeat its outermost ones (a Kinetics window of 8 frames into an HTWA stage of 2 or 32)."""
    depth = table.shape[0] // plane
    offsets = torch.arange(depth_to) - depth_to // 2
    rows = offsets.clamp(-(depth // 2), depth // 2) + depth // 2
    return table.view(depth, plane, -1)[rows].reshape(depth_to * plane, -1)


def resize_temporal_biases(sd: StateDict, target: Mapping[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Resize, in ``sd``, every bias table whose temporal window differs from its target's (same spatial
    window and heads); return what was done. Other shape differences are left for the shape check."""
    done = []
    for key, table in list(sd.items()):
        want = target.get(key)
        if not key.endswith("relative_position_bias_table") or want is None or table.shape == want.shape:
            continue
        wd, wh, ww = _block_window(model, key)
        plane = (2 * wh - 1) * (2 * ww - 1)
        rows = table.shape[0]
        if table.ndim != 2 or table.shape[1] != want.shape[1] or rows % plane or (rows // plane) % 2 == 0:
            continue
        sd[key] = resize_temporal_bias(table, 2 * wd - 1, plane)
        done.append(f"{key}: {rows // plane} -> {2 * wd - 1} temporal offsets (outermost ones repeated)")
    return done


SWIN_PREFIXES = ("backbone.", "enc_img.swin.")
"""Key prefixes in a Video Swin file: mmaction's (the Kinetics release), ours (a Swin saved alone)."""


def _swin_key(key: str) -> str:
    for prefix in SWIN_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def load_swin_checkpoint(
    swin: SwinTransformer3D,
    path: str | Path,
    mode: str = "3d",
    strict: bool = True,
    trust_pickle: bool = False,
) -> LoadReport:
    """Load Video Swin Kinetics weights (``mode="3d"``) or inflate a 2-D ImageNet Swin (``mode="2d"``).

    Keys may carry mmaction's ``backbone.`` or our ``enc_img.swin.`` prefix. Classification heads
    (``cls_head.*`` / ``head.*``) are ignored; derived buffers dropped; shapes must match.
    """
    if mode not in ("3d", "2d"):
        raise ValueError(f"mode must be '3d' or '2d', got {mode!r}")
    report = LoadReport(source=str(path), layout=f"video-swin-{mode}")
    sd = {_swin_key(k): v for k, v in read_state_dict(path, trust_pickle).items()}
    report.ignored = [k for k in sd if k.startswith(("cls_head.", "head."))]
    sd = {k: v for k, v in sd.items() if k not in report.ignored}
    if mode == "2d":
        sd = inflate_2d_swin(sd, swin, report)
    target = swin.state_dict()
    sd, report.dropped = drop_derived_buffers(sd, keep=target)
    report.resized += resize_temporal_biases(sd, target, swin)
    report.unexpected = [k for k in sd if k not in target]
    report.missing = [k for k in target if k not in sd]
    # HTWA's local-tap LayerNorm is ours: no released Swin has it (it keeps its initial unit weights)
    report.initialised = [k for k in report.missing if k.startswith("norm_local.")]
    report.missing = [k for k in report.missing if k not in report.initialised]
    mismatched = shape_mismatches(sd, target)
    if mismatched:
        raise CheckpointError(
            f"{path}: Swin shapes do not match (wrong size or window?):\n  " + "\n  ".join(mismatched)
        )
    if strict and not report.ok:
        raise CheckpointError(f"{path} does not fit this Swin (wrong size/depths?):\n{report}")
    sd = {k: v for k, v in sd.items() if k in target}
    swin.load_state_dict(sd, strict=False)
    report.loaded = len(sd)
    return report


# ----------------------------------------------------------------------------------------------------
# Local Hugging Face BERT folders
# ----------------------------------------------------------------------------------------------------


def read_bert_config(bert_dir: str | Path) -> dict[str, Any]:
    path = Path(bert_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"BERT config not found: {path} (bert_dir must be a local Hugging Face folder)"
        )
    cfg = read_json(path, "BERT config (config.json)")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}: hidden_act={cfg['hidden_act']!r}; only BERT's 'gelu' is implemented")
    return cfg


def bert_config_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """LavenderConfig fields taken from a Hugging Face BERT config.json."""
    names = {
        "hidden_size": "hidden_size",
        "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "intermediate_size": "intermediate_size",
        "vocab_size": "vocab_size",
        "max_position_embeddings": "max_position_embeddings",
        "type_vocab_size": "type_vocab_size",
        "layer_norm_eps": "layer_norm_eps",
        "hidden_dropout": "hidden_dropout_prob",
        "attention_dropout": "attention_probs_dropout_prob",
        "pad_token_id": "pad_token_id",
    }
    return {ours: cfg[theirs] for ours, theirs in names.items() if cfg.get(theirs) is not None}


def read_bert_weights(bert_dir: str | Path) -> tuple[StateDict, str]:
    bert_dir = Path(bert_dir)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (bert_dir / name).is_file():
            sd = read_state_dict(bert_dir / name)
            return {k.removeprefix("bert."): v for k, v in sd.items()}, str(bert_dir / name)
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {bert_dir}")


def load_bert_weights(model: LavenderModel, bert_dir: str | Path) -> LoadReport:
    """Text embeddings, fusion (and text) layers and, if present, the MLM head from a local BERT folder.

    A BertModel-only folder (e.g. all-MiniLM-L6-v2) has no MLM head: the transform stays fresh and the decoder
    is initialised from (a copy of) the word embeddings, as the tied HF head would start.
    """
    sd, source = read_bert_weights(bert_dir)
    report = LoadReport(source=source, layout="hf-bert")
    sd, report.dropped = drop_derived_buffers(sd)
    mapped: StateDict = {}
    for key, value in sd.items():
        if key.startswith("embeddings."):
            mapped["enc_txt.emb_txt." + key[len("embeddings.") :]] = value
        elif key.startswith("encoder.layer."):
            rest = key[len("encoder.layer.") :]
            mapped["trsfr.layer." + rest] = value
            if int(rest.split(".", 1)[0]) < model.config.text_layers:
                mapped["enc_txt.txt_trsfr.layer." + rest] = value
        elif key.startswith("cls.predictions."):
            mapped["fc_mtm.predictions." + key[len("cls.predictions.") :]] = value
        elif key.startswith(("pooler.", "cls.seq_relationship.")):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    word = mapped["enc_txt.emb_txt.word_embeddings.weight"]
    if "fc_mtm.predictions.decoder.weight" not in mapped:
        mapped["fc_mtm.predictions.decoder.weight"] = word.clone()
        report.notes.append("MLM decoder initialised from a copy of the word embeddings (not tied)")
    if not any(k.startswith("fc_mtm.predictions.transform.") for k in mapped):
        report.notes.append("no MLM head in the folder (BertModel): transform and bias freshly initialised")
    prepared, sub = prepare_state_dict(mapped, model, source)
    ours = ("enc_txt.", "trsfr.", "fc_mtm.predictions.decoder.weight")
    report.missing = [k for k in sub.missing + sub.initialised if k.startswith(ours)]
    report.unexpected += sub.unexpected
    if report.missing or report.unexpected:
        raise CheckpointError(f"{bert_dir} does not fit the text/fusion part of the model:\n{report}")
    model.load_state_dict(prepared, strict=False)
    report.loaded = len(prepared)
    return report


def build_from_pretrained_parts(
    config: LavenderConfig,
    bert_dir: str | Path | None = None,
    swin_ckpt: str | Path | None = None,
    swin_init: str = "random",
) -> LavenderModel:
    """A model from a LOCAL Hugging Face BERT folder and/or a Video Swin checkpoint.

    ``swin_init``: "3d" (Kinetics Video Swin ``.pth``), "2d" (inflate an ImageNet Swin), or "random".
    The BERT folder's config.json sets the fusion width / layers / heads. What was loaded, missing or made
    fresh is in ``model.load_reports``.
    """
    if swin_init not in ("3d", "2d", "random"):
        raise ValueError(f"swin_init must be '3d', '2d' or 'random', got {swin_init!r}")
    if (swin_init == "random") != (swin_ckpt is None):
        raise ValueError(
            f"swin_init={swin_init!r} with swin_ckpt={swin_ckpt!r}: give a checkpoint exactly for '3d'/'2d'"
        )
    if bert_dir is not None:
        config = dataclasses.replace(config, **bert_config_fields(read_bert_config(bert_dir)))
    model = LavenderModel(config)
    reports: dict[str, LoadReport] = {}
    if bert_dir is not None:
        reports["bert"] = load_bert_weights(model, bert_dir)
    if swin_ckpt is not None:
        reports["swin"] = load_swin_checkpoint(model.enc_img.swin, swin_ckpt, mode=swin_init)
    model.load_reports = reports
    return model


# ----------------------------------------------------------------------------------------------------
# Our directory format
# ----------------------------------------------------------------------------------------------------


def save_model_dir(model: LavenderModel, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created; other files left alone)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != DECODER_BIAS}
    metadata = {"format": "pt"}
    write_atomic_path(directory / MODEL_WEIGHTS, lambda p: save_file(tensors, str(p), metadata=metadata))
    text = json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"
    write_text(directory / MODEL_CONFIG, text)
    return directory


def load_model_dir(directory: str | Path, map_location: str | torch.device = "cpu") -> LavenderModel:
    """Rebuild a model saved by :func:`save_model_dir` (every key must match); returned in eval mode."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory not found: {directory}")
    model = LavenderModel(LavenderConfig.from_json(directory / MODEL_CONFIG))
    report = load_checkpoint(model, directory / MODEL_WEIGHTS, strict=True)
    if report.initialised:
        raise CheckpointError(f"{directory}: incomplete model weights:\n{report}")
    return model.to(map_location).eval()


# ----------------------------------------------------------------------------------------------------
# Converting reference checkpoints (used by _tools/convert_checkpoint.py)
# ----------------------------------------------------------------------------------------------------


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


def config_from_reference_args(
    args: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> LavenderConfig:
    """LavenderConfig from a reference ``_args/*.json`` (backbone keys only) plus explicit overrides.

    Mapped: vis_backbone_size, max_size_frame, max_size_patch, fusion_encoder / txt_backbone (a known BERT
    name or a local folder with config.json), txt_backbone_embed_only, enable_task_token. Everything else is
    training-only.
    """
    fields: dict[str, Any] = {}
    fields["swin_size"] = str(args.get("vis_backbone_size", "base"))
    for key in ("max_size_frame", "max_size_patch"):
        if key in args:
            fields[key] = int(args[key])
    bert = str(args.get("fusion_encoder") or args.get("txt_backbone") or "bert-base-uncased")
    overrides = dict(overrides or {})
    if (Path(bert) / "config.json").is_file():
        fields.update(bert_config_fields(read_bert_config(bert)))
    elif bert in REFERENCE_BERTS:
        fields.update(REFERENCE_BERTS[bert])
    elif "hidden_size" not in overrides:
        raise ValueError(
            f"unknown text backbone {bert!r}: pass a local BERT folder or --hidden_size/--num_layers/..."
        )
    if "txt_backbone_embed_only" in args:
        fields["txt_backbone_embed_only"] = _as_bool(args["txt_backbone_embed_only"])
    if "enable_task_token" in args:
        fields["enable_task_token"] = _as_bool(args["enable_task_token"])
    fields.update(overrides)
    return LavenderConfig.from_dict(fields, source="reference args + overrides")


def convert_reference_checkpoint(
    src: str | Path,
    config: LavenderConfig,
    out_dir: str | Path,
    trained_grid: int | None = None,
    trained_frames: int | None = None,
    trust_pickle: bool = False,
) -> LoadReport:
    """Load a reference checkpoint strictly into a fresh model and write it in our directory format."""
    model = LavenderModel(config)
    report = load_checkpoint(model, src, True, trained_grid, trained_frames, trust_pickle)
    save_model_dir(model, out_dir)
    return report


__all__ = [
    "CheckpointError",
    "LoadReport",
    "build_from_pretrained_parts",
    "config_from_reference_args",
    "convert_reference_checkpoint",
    "detect_layout",
    "inflate_2d_swin",
    "load_bert_weights",
    "load_checkpoint",
    "load_model_dir",
    "load_swin_checkpoint",
    "read_bert_config",
    "read_state_dict",
    "resize_emb_len",
    "resize_emb_pos",
    "save_model_dir",
]
