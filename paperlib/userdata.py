"""Your own labelled images: a ``<label>/<image>`` folder or a CSV of ``file,label``.

:func:`load_labelled_images` gives a :class:`LabelledDataset`, an
:class:`paperlib.data.ImageDataset` whose labels are your classes, so that
:func:`paperlib.iter_batches`, the metrics and :func:`paperlib.evaluation.run_evaluation` take it
as they take the ImageNet sample.

Two layouts:

* **folders**: ``root/<label>/<image>`` (images may sit deeper inside a label's folder);
* **CSV**: a file with a header holding the columns ``file`` and ``label`` (other columns are
  ignored); ``file`` is relative to the image root (by default the CSV's folder) or absolute
  inside it.

A label's index is its position among the sorted label names (as strings: ``"10" < "2"``), or
comes from ``classes``: a sequence of names (index = position; e.g. your model's class names, so
that labels index its outputs) or a ``{name: index}`` mapping.

The kit's rules for bad input hold (:mod:`paperlib.data`): files and folders whose names start
with ``.`` are ignored; everything else is listed and counted in :attr:`ImageDataset.report`.
A file whose label is unknown (not in ``classes``), a file outside any label folder, a CSV row
naming a missing file or an empty label are skipped when listing; a file that cannot be decoded is
skipped when read (:func:`paperlib.iter_batches`). Each skip is a :class:`BadImageWarning` naming
the file, and a label never shifts.

Your data has no kit split: ``split(None)`` and ``split("all")`` give every image, and the
sample's ``"train"`` / ``"eval"`` class-index splits are an error (use ``EvalSettings(split=
"all")`` for an evaluation; a folder per split for a train/evaluation separation).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from .data import BadImageWarning, ImageDataset, LoadReport, Record

__all__ = ["LabelledDataset", "load_labelled_images"]


class LabelledDataset(ImageDataset):
    """An :class:`ImageDataset` of your own classes (see the module docstring).

    Attributes:
        classes: the class names by label index (an index no name maps to is named by its
            number).
        class_to_index: ``{label name: index}``.
    """

    def __init__(self, root: Path, records: Sequence[Record], layout: str,
                 class_to_index: Mapping[str, int], report: LoadReport | None = None) -> None:
        super().__init__(root, records, layout, report)
        self.class_to_index = dict(class_to_index)
        n = max(self.class_to_index.values(), default=-1) + 1
        names = [str(i) for i in range(n)]
        for name, i in sorted(self.class_to_index.items(), key=lambda kv: kv[1], reverse=True):
            names[i] = name  # several names for one index: the first in sorted order wins
        self.classes: tuple[str, ...] = tuple(names)

    def _derive(self, records: Sequence[Record]) -> LabelledDataset:
        return LabelledDataset(self.root, records, self.layout, self.class_to_index, self.report)

    def split(self, name: str | None) -> LabelledDataset:
        """Every image for ``None`` or ``"all"``; any other split is an error (no kit split)."""
        if name in (None, "all"):
            return self
        raise ValueError(f"split {name!r} is the ImageNet sample's class-index split; your "
                         f"labelled images ({self.root}) have none: use split None or 'all' "
                         "(EvalSettings(split='all')), or keep a folder per split")


def _class_index(labels: Sequence[str],
                 classes: Sequence[str] | Mapping[str, int] | None) -> dict[str, int]:
    if classes is None:
        return {name: i for i, name in enumerate(sorted(set(labels)))}
    if isinstance(classes, Mapping):
        mapping = {str(k): int(v) for k, v in classes.items()}
        bad = {k: v for k, v in mapping.items() if v < 0}
        if bad:
            raise ValueError(f"class indices must be >= 0, got {bad}")
        return mapping
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of names or a {name: index} mapping, "
                        f"got the string {classes!r}")
    names = [str(c) for c in classes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"classes holds the name(s) {dup} more than once; each name needs one "
                         "index (pass a {name: index} mapping for synonyms)")
    return {name: i for i, name in enumerate(names)}


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_file(path: Path) -> bool:
    """A file, or a broken symbolic link (listed, then skipped when read, as a bad file)."""
    return path.is_file() or (path.is_symlink() and not path.exists())


def _list_folders(root: Path, report: LoadReport) -> list[tuple[Path, str]]:
    """(file, label name) for every visible file; files outside a label folder are skipped."""
    found: list[tuple[Path, str]] = []
    for path in sorted(p for p in root.iterdir() if _visible(p, root)):
        if _is_file(path):
            report.listed += 1
            report.skip(path.name, "not inside a <label>/ folder")
            continue
        if not path.is_dir():
            continue
        for file in sorted(f for f in path.rglob("*") if _is_file(f) and _visible(f, root)):
            report.listed += 1
            found.append((file, path.name))
    return found


def _list_csv(table: Path, root: Path, report: LoadReport) -> list[tuple[Path, str]]:
    """(file, label name) for each row of ``table`` naming an existing file under ``root``.

    A file listed twice with the same label is one row (a warning names the lines); listed with
    different labels it is an error naming every line and label, never a silent choice."""
    found: list[tuple[Path, str]] = []
    lines: dict[Path, list[tuple[int, str]]] = {}  # file -> (line, label) of each row naming it
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "file" not in columns or "label" not in columns:
            raise ValueError(f"{table}: expected a header with the columns 'file' and 'label', "
                             f"found {reader.fieldnames}")
        for row_number, row in enumerate(reader, start=2):  # line 1 is the header
            report.listed += 1
            name = (row.get(columns["file"]) or "").strip()
            label = (row.get(columns["label"]) or "").strip()
            where = name or f"{table.name} line {row_number}"
            if not name or not label:
                report.skip(where, f"{table.name} line {row_number}: empty "
                                   f"{'file' if not name else 'label'}")
                continue
            path = Path(os.path.normpath(root / name))  # an absolute name replaces root
            if not path.is_file():
                report.skip(name, f"{table.name} line {row_number}: no such file {path}")
                continue
            rel = Path(os.path.relpath(path, root))
            if rel.parts[0] == "..":
                report.skip(name, f"{table.name} line {row_number}: {path} is outside the image "
                                  f"root {root}")
                continue
            seen = lines.setdefault(root / rel, [])
            seen.append((row_number, label))
            if len(seen) == 1:
                found.append((root / rel, label))
            else:
                report.listed -= 1  # the same file again: "files listed" counts files
    conflicts = {p: rows for p, rows in lines.items() if len({label for _, label in rows}) > 1}
    if conflicts:
        said = "; ".join(f"{p.relative_to(root)} at " + ", ".join(f"line {n} ({label!r})"
                                                                   for n, label in rows)
                         for p, rows in conflicts.items())
        raise ValueError(f"{table}: {len(conflicts)} file(s) listed with different labels: "
                         f"{said}; expected one label per file")
    for file, rows in lines.items():
        if len(rows) > 1:
            warnings.warn(f"{table.name}: {file.relative_to(root)} is listed {len(rows)} times "
                          f"(lines {', '.join(str(n) for n, _ in rows)}) with the same label; "
                          "read once", BadImageWarning, stacklevel=3)
    return found


def load_labelled_images(path: str | os.PathLike,
                         classes: Sequence[str] | Mapping[str, int] | None = None, *,
                         csv_file: str | os.PathLike | None = None) -> LabelledDataset:
    """Your labelled images as a :class:`LabelledDataset` (see the module docstring).

    Args:
        path: a folder of ``<label>/<image>``; or, with ``csv_file``, the folder the CSV's file
            names are relative to; or a ``.csv`` file itself (its folder is then the root).
        classes: the label indices: ``None`` (sorted label names), a sequence of names
            (index = position) or a ``{name: index}`` mapping. A label outside it is skipped.
        csv_file: a CSV with ``file`` and ``label`` columns.

    Raises ``FileNotFoundError`` for a missing folder or CSV and ``ValueError`` when no usable
    image is left (the message counts what was listed and skipped).
    """
    given = Path(path).expanduser()
    table = Path(csv_file).expanduser() if csv_file is not None else None
    if table is None and given.suffix.lower() == ".csv":
        table, given = given, given.parent
    if table is not None and not table.is_file():
        raise FileNotFoundError(f"CSV file {table} does not exist; expected a file with the "
                                "columns file,label")
    if not given.is_dir():
        raise FileNotFoundError(f"image folder {given} does not exist; expected a folder of "
                                "<label>/<image> files (or the root of a CSV's file names)")
    given_mapping = _class_index([], classes) if classes is not None else None  # checked first
    report = LoadReport()
    if table is not None:
        found, layout = _list_csv(table, given, report), "csv"
    else:
        found, layout = _list_folders(given, report), "labelled-folders"
    mapping = (given_mapping if given_mapping is not None
               else _class_index([label for _, label in found], None))
    records: list[Record] = []
    for file, label in found:
        if label not in mapping:
            report.skip(str(file.relative_to(given)),
                        f"label {label!r} is not one of the given classes")
            continue
        records.append(Record(file, mapping[label], label))
    if not records:
        expected = ("rows of file,label naming images under the root" if table is not None else
                    "one sub-folder per label holding its images")
        raise ValueError(f"no usable images in {table or given}: {report.listed} files listed, "
                         f"{report.n_skipped} skipped; expected {expected}")
    return LabelledDataset(given, records, layout, mapping, report)
