"""SwinBERT's captioning data, read as it is (LAVENDER's ``main_caption.py`` takes ``train_yaml`` /
``val_yaml`` / ``test_yaml``, e.g. ``MSRVTT-v2/train_32frames.yaml``).

A split is a YAML file naming, relative to its own folder (a path that exists as given is taken as it is):

=====================  ===================================================================================
``img``                the frame TSV: ``key \\t meta \\t frame…`` (base64 JPEGs; a row with fewer columns
                       than a clip is an image, its last column)
``caption``            the caption TSV: ``key \\t [{"caption": …}, …]`` (JSON), row ``i`` describing the
                       video of row ``i`` of ``img``
``caption_linelist``   optional: one ``img_row \\t caption_index`` per line, the training pairs (without
                       it, each row's first caption)
``caption_coco_format`` optional: the COCO-format references for evaluation (without it,
                       ``{folder}/{yaml stem}_caption_coco_format.json`` if present, else every caption of
                       the caption TSV)
``label``              SwinBERT's label TSV (not read for captioning)
``composite``          ``true``: CompositeTSVFile splits (not supported: an error says so)
=====================  ===================================================================================

A YAML path that is not a file as given is taken relative to ``data_dir`` (as the reference does).
Everything wrong is a :class:`SwinbertDataError` naming the file (and row or line).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lib.data.annotations import CaptionItem
from lib.data.tsv import TSVFile, decode_key


class SwinbertDataError(ValueError):
    """A SwinBERT split (YAML, caption TSV, linelist, references) is malformed; the message names the file."""


@dataclass(frozen=True)
class SwinbertSplit:
    """The files of one split, resolved."""

    yaml: Path
    img: Path
    caption: Path | None
    linelist: Path | None
    coco: Path | None


def resolve_yaml(name: str, data_dir: str | os.PathLike) -> Path:
    """``name`` as given when it is a file, else ``data_dir / name`` (FileNotFoundError naming both)."""
    if Path(name).is_file():
        return Path(name)
    path = Path(data_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"split description {name} not found (neither as given nor as {path})")
    return path


def _file_in_yaml(value: Any, root: Path, key: str, source: Path) -> Path | None:
    """The file a YAML entry names: as given when it exists, else relative to the YAML's folder."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SwinbertDataError(f"{source}: '{key}' must be a file name, got {value!r}")
    for candidate in (Path(value), root / value):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{source}: '{key}' names {value}, which is neither a file nor {root / value}")


def read_split(yaml_path: str | os.PathLike) -> SwinbertSplit:
    """The files of the split described by ``yaml_path``."""
    path = Path(yaml_path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SwinbertDataError(f"{path}: not a readable YAML file ({e})") from None
    if not isinstance(spec, dict):
        raise SwinbertDataError(f"{path}: expected a mapping of file names (img, caption, ...)")
    if spec.get("composite"):
        raise SwinbertDataError(
            f"{path}: 'composite: true' (SwinBERT's CompositeTSVFile of several TSVs) is not supported; "
            "give one frame TSV ('img') and one caption TSV per split"
        )
    root = path.parent
    img = _file_in_yaml(spec.get("img"), root, "img", path)
    if img is None:
        raise SwinbertDataError(f"{path}: no 'img' entry (the frame TSV)")
    coco = _file_in_yaml(spec.get("caption_coco_format"), root, "caption_coco_format", path)
    default_coco = root / f"{path.name.split('.')[0]}_caption_coco_format.json"
    return SwinbertSplit(
        yaml=path,
        img=img,
        caption=_file_in_yaml(spec.get("caption"), root, "caption", path),
        linelist=_file_in_yaml(spec.get("caption_linelist"), root, "caption_linelist", path),
        coco=coco or (default_coco if default_coco.is_file() else None),
    )


def read_caption_rows(path: Path) -> list[tuple[str, list[str]]]:
    """Every row of a caption TSV: (key, its captions in order)."""
    rows = []
    with TSVFile(path) as table:
        for i in range(len(table)):
            columns = table.row(i)
            key = decode_key(columns[0], f"{path} row {i}")
            try:
                entries = json.loads(columns[1]) if len(columns) > 1 else None
                captions = [str(e["caption"]) for e in entries]  # type: ignore[union-attr]
            except (ValueError, TypeError, KeyError) as e:
                raise SwinbertDataError(
                    f'{path} row {i} (key {key!r}): column 1 is not a JSON list of {{"caption": ...}} ({e})'
                ) from None
            rows.append((key, captions))
    return rows


def read_linelist(path: Path, n_rows: int, captions: list[tuple[str, list[str]]]) -> list[tuple[int, int]]:
    """The (row, caption index) training pairs of a linelist file, checked against the caption TSV."""
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row, index = (int(x) for x in line.split("\t")[:2])
        except ValueError:
            raise SwinbertDataError(
                f"{path} line {n}: expected 'row<TAB>caption index', got {line!r}"
            ) from None
        if not (0 <= row < n_rows and 0 <= index < len(captions[row][1])):
            raise SwinbertDataError(
                f"{path} line {n}: row {row}, caption {index} is not in the caption TSV ({n_rows} rows)"
            )
        pairs.append((row, index))
    return pairs


def read_coco_references(path: Path) -> dict[str, list[str]]:
    """``image_id`` -> its reference captions, from a COCO-format caption file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        refs: dict[str, list[str]] = {}
        for item in data["annotations"]:
            refs.setdefault(str(item["image_id"]), []).append(str(item["caption"]))
    except (ValueError, TypeError, KeyError) as e:
        raise SwinbertDataError(f"{path}: not a COCO-format caption file ({type(e).__name__}: {e})") from None
    return refs


def frame_keys(path: Path) -> list[str]:
    with TSVFile(path) as table:
        return table.keys()


def training_pairs(split: SwinbertSplit) -> list[CaptionItem]:
    """One record per training pair: the linelist's (row, caption), else each row's first caption."""
    if split.caption is None:
        raise SwinbertDataError(f"{split.yaml}: a training split needs a 'caption' TSV")
    captions = read_caption_rows(split.caption)
    if split.linelist is not None:
        pairs = read_linelist(split.linelist, len(captions), captions)
    else:
        pairs = [(row, 0) for row, (_, texts) in enumerate(captions) if texts]
    return [CaptionItem(captions[row][0], (captions[row][1][index],)) for row, index in pairs]


def evaluation_references(split: SwinbertSplit) -> list[CaptionItem]:
    """One record per (video, reference caption), videos in the order of the caption TSV (of the frame TSV
    without one); references from the COCO-format file when the split has one (by key, or by the key's
    file stem as SwinBERT's image ids may be), else the caption TSV's."""
    rows = read_caption_rows(split.caption) if split.caption is not None else None
    keys = [key for key, _ in rows] if rows is not None else frame_keys(split.img)
    coco = read_coco_references(split.coco) if split.coco is not None else None
    if coco is None and rows is None:
        raise SwinbertDataError(f"{split.yaml}: neither a 'caption' TSV nor COCO-format references")
    by_stem = {Path(k).stem: v for k, v in coco.items()} if coco is not None else {}
    records = []
    for i, key in enumerate(keys):
        refs = (coco.get(key) or by_stem.get(Path(key).stem)) if coco is not None else rows[i][1]  # type: ignore[index]
        if not refs:
            where = split.coco if coco is not None else split.caption
            raise SwinbertDataError(f"{where}: no reference caption for video {key!r} of {split.yaml}")
        records += [CaptionItem(key, (text,)) for text in refs]
    return records
