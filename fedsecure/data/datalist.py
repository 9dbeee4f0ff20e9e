"""Reading a site's datalist: which image files it holds, their class and (optionally) their split.

Two formats, as hospitals and MONAI keep them:

* **Decathlon JSON** (``dataset.json``, the layout MONAI's
  ``load_decathlon_datalist`` reads): the ``training`` list of
  ``{"image": ..., "label": ...}`` items; a ``validation`` list, if present, is
  the validation split. A top-level ``labels`` mapping names the classes.
* **CSV** with a header: columns ``image`` and ``label``, and optionally ``split``.

``image`` is a file (NIfTI, PNG, a single DICOM file) or a folder holding one
DICOM series, relative to the datalist's folder. ``label`` is an integer class, or,
for segmentation, the image's mask file (same size and grid; 0 is the background).
``split`` is ``train``, ``val`` or ``test``; items without one are split by
the data source (seeded, stratified). Every problem raises a
:class:`~fedsecure.errors.DataError` that names the site, the file and the problem.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fedsecure.data.image_files import IMAGE_SUFFIXES
from fedsecure.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class DatalistEntry:
    """One image of a datalist.

    Attributes:
        image: the image file or DICOM folder (absolute).
        label: its class (0 for every image of a segmentation datalist).
        split: ``train``, ``val`` or ``test``, or None when the datalist does not say.
        row: where it is in the datalist, for messages (e.g. ``training[3]`` or ``line 5``).
        mask: its mask file (absolute) in a segmentation datalist, else None.
    """

    image: Path
    label: int
    split: str | None
    row: str
    mask: Path | None = None


def read_datalist(path: Path, site: str, masks: bool = False) -> list[DatalistEntry]:
    """The entries of a Decathlon JSON (``.json``) or CSV (``.csv``) datalist.

    ``masks``: the ``label`` of each entry is its mask file (segmentation), not a class.

    Raises:
        DataError: the datalist is missing, unreadable or malformed, names a missing
            image, or gives a label that is not a class or a split that is not one
            of ``train``, ``val``, ``test``.
    """
    # Absolute from the start: image paths resolve against the datalist's own folder, wherever we run.
    path = Path(path).expanduser().resolve()
    where = f"site {site!r}: {path}"
    if not path.is_file():
        raise DataError(f"{where}: no such datalist")
    readers = {".json": _decathlon_rows, ".csv": _csv_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{where}: a datalist is a Decathlon .json or a .csv file, not {path.suffix or 'no suffix'!r}")
    try:
        rows, class_names = reader(path, where)
    except OSError as exc:
        raise DataError(f"{where}: cannot read the datalist ({exc.strerror or exc})") from None
    if not rows:
        raise DataError(f"{where}: the datalist lists no images")
    entries = [_entry(path, where, row, fields, class_names, masks) for row, fields in rows]
    seen: dict[Path, str] = {}
    for entry in entries:
        real = entry.image.resolve()
        if real in seen:
            raise DataError(f"{where}: {entry.row} lists {entry.image} again (also at {seen[real]})")
        seen[real] = entry.row
    return entries


Rows = list[tuple[str, dict[str, object]]]


def _decathlon_rows(path: Path, where: str) -> tuple[Rows, set[str] | None]:
    # The Decathlon layout MONAI's load_decathlon_datalist reads; parsed here because MONAI turns every
    # value that names an existing file into a path (a "split": "train" beside a train/ folder, a label "1").
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: not a readable JSON datalist ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("training"), list):
        raise DataError(f"{where}: a Decathlon datalist needs a 'training' list of {{image, label}} items")
    rows: Rows = []
    for key, split in (("training", None), ("validation", "val")):
        items = document.get(key, [])
        if not isinstance(items, list):
            raise DataError(f"{where}: {key!r} is not a list of {{image, label}} items")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataError(f"{where}: {key}[{i}] is not an {{image, label}} item")
            rows.append((f"{key}[{i}]", {**item, "split": item.get("split", split)}))
    names = document.get("labels")
    class_names = {str(k) for k in names} if isinstance(names, dict) else None
    return rows, class_names


def _csv_rows(path: Path, where: str) -> tuple[Rows, None]:
    try:
        # utf-8-sig: a spreadsheet's CSV export starts with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [column for column in ("image", "label") if column not in header]
            if missing:
                raise DataError(
                    f"{where}: the CSV header lacks column(s) {', '.join(missing)} "
                    f"(found: {', '.join(header) or 'none'}; expected image,label[,split])"
                )
            rows: Rows = []
            for record in reader:
                fields = {str(k).strip(): (v.strip() if isinstance(v, str) else v) for k, v in record.items()}
                rows.append((f"line {reader.line_num}", fields))
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not a readable CSV datalist ({exc})") from None
    except csv.Error as exc:
        raise DataError(f"{where}: not a readable CSV datalist ({exc})") from None
    return rows, None


def _entry(
    path: Path, where: str, row: str, fields: dict[str, object], class_names: set[str] | None, masks: bool
) -> DatalistEntry:
    image = _existing(path, where, row, fields.get("image"), "image")
    mask = _existing(path, f"{where}: {row} ({image.name})", "label", fields.get("label"), "mask") if masks else None
    label = 0 if masks else _label(fields.get("label"), f"{where}: {row} ({image.name})", class_names)
    split = fields.get("split") or None
    if split is not None and split not in SPLIT_NAMES:
        raise DataError(f"{where}: {row} ({image.name}) has split {split!r}; expected one of {', '.join(SPLIT_NAMES)}")
    return DatalistEntry(image=image, label=label, split=split if split is None else str(split), row=row, mask=mask)


def _existing(datalist: Path, where: str, row: str, value: object, what: str) -> Path:
    """The file (or DICOM folder) ``value`` names, relative to the datalist's folder, absolute; it must exist."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise DataError(f"{where}: {row} has no {what}")
    file = Path(value).expanduser()
    # Absolute but not resolved: a link keeps its own name, whose suffix tells the reader what the file is.
    file = Path(os.path.abspath(file if file.is_absolute() else datalist.parent / file))
    if not file.exists():
        raise DataError(f"{where}: {row} names {file}, which does not exist")
    return file


def _label(value: object, where: str, class_names: set[str] | None) -> int:
    text = str(value).strip() if value is not None else ""
    if isinstance(value, bool) or not text.lstrip("-").isdigit():
        hint = "; segmentation masks are not classes" if text.lower().endswith(IMAGE_SUFFIXES) else ""
        raise DataError(f"{where}: label {text or 'missing'!r} is not a class (an integer 0, 1, ...){hint}")
    label = int(text)
    if label < 0:
        raise DataError(f"{where}: label {label} is negative; classes are 0, 1, ...")
    if class_names is not None and str(label) not in class_names:
        known = ", ".join(sorted(class_names))
        raise DataError(f"{where}: label {label} is not one of the datalist's classes ({known})")
    return label
