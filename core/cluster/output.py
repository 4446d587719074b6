"""Cluster folders and the JSON report.

Layout inside the job folder::

    cluster_0001/   the largest cluster (files named like their input path, folders
    cluster_0002/   joined with ``__`` so names never collide)
    ...
    outliers/       images similar to no other image
    clusters.json   the report: every input file -> its cluster (or "outliers" /
                    "failed"), the method, the threshold and the method's statistics
    clusters.csv    one row per input file: ``input`` (path relative to the input
                    folder), ``cluster`` (folder name, ``outliers`` or ``failed``),
                    ``output`` (the placed file relative to the job folder; empty
                    for a failed file), ``reason`` (why it failed or is an outlier,
                    when known)
    pairs.csv       one row per matched pair: ``a``, ``b`` (input paths), ``method``,
                    ``similarity`` (the method's score, larger = more alike; for
                    ``dup`` the hash similarity ``1 - bits / 64``), ``stage`` (what
                    accepted it: ``threshold`` for the threshold methods; ``sure``,
                    ``verified`` or ``link`` for ``dup``)

Files are copied by default; ``symlink``, ``hardlink`` and ``move`` are options
(``move`` takes the files out of the input folder; the report keeps their original
paths). Re-writing removes the folders of the previous report first, and those of a
run that was killed while placing files (named in ``.clusters-pending.json``, written
before the first file is placed and removed once the report is written).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from segdeck.core.imageio import flat_item_name, write_text_atomic

REPORT_NAME = "clusters.json"
TABLE_NAME = "clusters.csv"
PAIRS_NAME = "pairs.csv"
OUTLIERS = "outliers"
#: Folders and output mode of a write in progress (see the module docstring).
PENDING_NAME = ".clusters-pending.json"
MODES = ("copy", "symlink", "hardlink", "move")
_CLUSTER_DIR = re.compile(r"^cluster_\d{4,}$")


def cluster_dir_name(k: int) -> str:
    """Folder name of the ``k``-th cluster (0-based): ``cluster_0001``, ..."""
    return f"cluster_{k + 1:04d}"


def _place(src: Path, dest: Path, mode: str) -> None:
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    if mode == "copy":  # temp file + rename (no fsync per photo): a killed job leaves no half copy
        tmp = dest.with_name(f".{dest.name}.tmp")  # removed by the runner's stale-temp sweep
        try:
            shutil.copy2(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    elif mode == "symlink":  # absolute, symlinks on the way kept (resolving each costs an lstat per folder level)
        os.symlink(os.path.abspath(src), dest)
    elif mode == "hardlink":
        try:
            os.link(src, dest)
        except OSError as exc:
            raise OSError(f"cannot hard-link {src} into {dest.parent} ({exc.strerror}); "
                          "hard links need the same file system: use --output copy or symlink") from None
    elif mode == "move":
        shutil.move(str(src), str(dest))
    else:
        raise ValueError(f"unknown output mode {mode!r}; known: {', '.join(MODES)}")


def clear_previous(job_dir: str | Path) -> None:
    """Remove the cluster folders written by a previous run (the ones its report lists,
    or a killed run's :data:`PENDING_NAME` lists; only folders named ``cluster_NNNN`` /
    ``outliers``).

    Raises
    ------
    ValueError
        If the previous run *moved* the images there: those files are the only copies,
        and removing the folders would delete the user's photos.
    """
    job_dir = Path(job_dir)
    names: set[str] = set()
    moved = False
    report = job_dir / REPORT_NAME
    if report.is_file():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
            names = {c["folder"] for c in data.get("clusters", [])} | {OUTLIERS}
            moved = data.get("output_mode") == "move"
        except (ValueError, KeyError, TypeError, AttributeError):
            names = set()
    pending = job_dir / PENDING_NAME
    if pending.is_file():
        try:
            data = json.loads(pending.read_text(encoding="utf-8"))
            names |= {str(n) for n in data.get("folders", [])}
            moved = moved or data.get("output_mode") == "move"
        except (ValueError, TypeError, AttributeError):
            pass
    names = {n for n in names if n == OUTLIERS or _CLUSTER_DIR.match(n)}
    if moved and any(p.is_file() for n in names if (job_dir / n).is_dir() for p in (job_dir / n).iterdir()):
        raise ValueError(
            f"the previous run moved the images into the cluster folders of {job_dir}; clustering again "
            "would delete them. Move them back into the input folder (or cluster them from there) first"
        )
    for name in names:
        if name == OUTLIERS or _CLUSTER_DIR.match(name):
            shutil.rmtree(job_dir / name, ignore_errors=True)
    pending.unlink(missing_ok=True)


def write_clusters(
    job_dir: str | Path,
    input_root: str | Path,
    items: list[str],
    clusters: list[list[int]],
    outliers: list[int],
    *,
    mode: str = "copy",
    failed: list[str] | dict[str, str] = (),
    info: dict | None = None,
) -> tuple[list[str], list[str]]:
    """Write one folder per cluster, an outliers folder, ``clusters.json`` and ``clusters.csv``.

    Parameters
    ----------
    job_dir : path-like
        Output folder (the job folder).
    input_root : path-like
        Folder the ``items`` are relative to (or the single input file).
    items : list of str
        Item paths relative to ``input_root`` (POSIX style).
    clusters : list of list of int
        Member indices into ``items`` of each cluster, largest first.
    outliers : list of int
        Indices of the images in no cluster.
    mode : {"copy", "symlink", "hardlink", "move"}
    failed : list of str, or dict of str to str
        Items that could not be read (listed in the report, not placed); a dict maps
        each to its one-line reason (written to ``clusters.csv``).
    info : dict, optional
        Extra report fields (method, threshold, statistics, candidate scores...);
        ``outliers_reason`` also goes into the ``reason`` column of the outliers.

    Returns
    -------
    outputs : list of str
        Paths written, relative to ``job_dir`` (the folders and the report).
    errors : list of str
        One line per file that could not be placed (the others are placed); the report
        keeps such a file under its cluster in ``files``, lists it in ``unplaced`` (file
        -> reason) and ``clusters.csv`` gives the reason with an empty ``output``.

    Raises
    ------
    ValueError
        Unknown ``mode``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown output mode {mode!r}; known: {', '.join(MODES)}")
    job_dir, root = Path(job_dir), Path(input_root)
    clear_previous(job_dir)
    errors: list[str] = []
    files: dict[str, str] = {}
    placed: dict[str, str] = {}
    unplaced: dict[str, str] = {}
    reasons = dict(failed) if isinstance(failed, dict) else {}
    failed = list(failed)
    report_clusters = []
    groups = [(cluster_dir_name(k), members) for k, members in enumerate(clusters)]
    groups.append((OUTLIERS, list(outliers)))
    # a run killed while placing files leaves this list, so the next run clears its folders
    job_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(job_dir / PENDING_NAME, json.dumps({"output_mode": mode, "folders": [g for g, _ in groups]}))
    for folder, members in groups:
        dest_dir = job_dir / folder
        dest_dir.mkdir(parents=True, exist_ok=True)
        names = []
        used: set[str] = set()
        for idx in members:
            item = items[idx]
            src = root if root.is_file() else root / item
            flat = flat_item_name(item)
            if flat in used:  # "a/b.jpg" and "a__b.jpg" flatten alike: never overwrite (move would lose one)
                stem, suffix = os.path.splitext(flat)
                k = 2
                while f"{stem}~{k}{suffix}" in used:
                    k += 1
                flat = f"{stem}~{k}{suffix}"
            used.add(flat)
            dest = dest_dir / flat
            try:
                _place(src, dest, mode)
            except OSError as exc:
                errors.append(f"{item}: {exc}")
                files[item] = folder  # its cluster still: clusters.csv says why it is not there
                unplaced[item] = str(exc)
                continue
            files[item] = folder
            placed[item] = f"{folder}/{flat}"
            names.append(item)
        if folder != OUTLIERS:
            report_clusters.append({"folder": folder, "size": len(names), "files": names})
    for item in failed:
        files[item] = "failed"
    report = {
        "input": str(root.resolve()) if mode != "move" else str(root),
        "output_mode": mode,
        "n_images": len(items) + len(failed),
        "n_clusters": len(report_clusters),
        "n_outliers": len(outliers),
        "clusters": report_clusters,
        "outliers": [items[i] for i in outliers if items[i] in files],
        "failed": list(failed),
        "unplaced": dict(sorted(unplaced.items())),
        "files": dict(sorted(files.items())),
        **(info or {}),
    }
    write_text_atomic(job_dir / REPORT_NAME, json.dumps(report, indent=1, ensure_ascii=False, default=_json_default))
    (job_dir / PENDING_NAME).unlink(missing_ok=True)
    outlier_reason = (info or {}).get("outliers_reason", "")
    rows = [(item, folder, placed.get(item, ""),
             reasons.get(item, "") if folder == "failed" else unplaced.get(item) or (
                 outlier_reason if folder == OUTLIERS else ""))
            for item, folder in sorted(files.items())]
    _write_csv(job_dir / TABLE_NAME, ("input", "cluster", "output", "reason"), rows)
    outputs = [g for g, _ in groups] + [REPORT_NAME, TABLE_NAME]
    return outputs, errors


def write_pairs(job_dir: str | Path, rows) -> str:
    """Write ``pairs.csv``: the matched pairs of a clustering (see the module docstring).

    Parameters
    ----------
    job_dir : path-like
    rows : iterable of (str, str, str, float, str)
        ``(a, b, method, similarity, stage)`` with ``a``, ``b`` input paths.

    Returns
    -------
    str
        The file name, relative to ``job_dir``.
    """
    _write_csv(Path(job_dir) / PAIRS_NAME, ("a", "b", "method", "similarity", "stage"),
               [(a, b, m, f"{float(s):.6g}", st) for a, b, m, s, st in rows])
    return PAIRS_NAME


def _write_csv(path: Path, header, rows) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)
