"""The ``propagate`` job: ``segdeck run propagate SPEC`` (SPEC: a project spec TOML).

Per group of the project (:mod:`.spec`), the labelled references of the
:class:`~.references.ReferenceStore` condition SAM 2's video predictor
(:func:`segdeck.core.sam.video.open_propagator`, loaded once in :meth:`PropagateJob.setup`);
every other image of the group is an item (id = its primary key) and gets a label map
predicted from the references alone, so the result does not depend on the order of
the targets, a resumed run continues per image, and memory does not grow with the
group. Groups are processed one after another; the references of a group are loaded
once (images through :mod:`segdeck.core.imageio`, EXIF orientation applied).

Outputs per target (``<key slug>`` = :func:`~.spec.file_slug` of the primary key):

* ``<key>.labels.png``: label map at the image's upright size, uint8 (uint16 above
  255), 0 = background, object IDs after the mask mode (:mod:`.modes`);
* ``<key>.overlay.jpg``: the image with the objects drawn over it;
* ``<key>.regions.csv``: one row per object (label = object ID, area, bbox, centroid);
* ``parts/<key>.coco.json`` -> ``coco.json`` (RLE, one category per object ID,
  ``file_name`` = the image path relative to the spec's root) and ``regions.csv`` (every
  target's rows, with ``key``, ``group``, ``image`` and ``annotation_id`` first);
* ``propagate.json``: the spec settings and reference fingerprints the outputs came
  from (a later run with changed references or settings refuses to mix them in).

Groups without a labelled reference holding an object are reported and skipped (no
empty mask is written). Images listed in the CSV but missing on disk are counted and
listed; they fail as items while the run goes on.

``dry_run`` (``--dry-run``) checks the spec, the CSV, the files and the references
(every group has a reference with an object; each reference's label map matches its
JSON and its image's upright size), prints a per-group table and loads no model; it
exits with code 2 when a group cannot be propagated.

This module imports nothing heavy (the CLI and TUI build forms from it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from segdeck.core import imageio, outputs
from segdeck.core.errors import SegdeckError, SetupError
from segdeck.core.jobs.base import Job
from segdeck.core.jobs.events import Message, Sink
from segdeck.core.jobs.items import Item
from segdeck.core.params import DERIVED, JobParams
from segdeck.core.propagate.modes import QUADRANT_NAMES, apply_mode, reference_labels
from segdeck.core.propagate.references import ReferenceEntry, ReferenceStore
from segdeck.core.propagate.spec import (
    Group,
    Project,
    Row,
    SpecError,
    file_slug,
    load_project,
    not_a_spec_line,
)
from segdeck.core.sam.params import fill_checkpoint_sha256

STATE_NAME = "propagate.json"


class PropagateParams(JobParams):
    """Propagate labelled reference masks to every image of each group (SAM 2 memory)."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="compute device (auto: CUDA when available)")
    checkpoint: str | None = Field(
        None, description="fine-tuned weights of the spec's model family and size (a file) instead of the official ones",
    )
    checkpoint_sha256: str | None = Field(
        None, description="sha256 of the checkpoint file (filled in from the file; recorded in job.toml and the run name)",
        json_schema_extra=DERIVED,
    )
    batch_size: int = Field(1, ge=1, le=256, description="targets per forward pass")
    max_frames: int | None = Field(None, ge=1, description="at most this many targets per group (for trying settings)")
    dry_run: bool = Field(False, description="check spec, CSV, files and references, print a per-group table; no model")
    image_size: int | None = Field(
        None, ge=64, le=4096, multiple_of=64,
        description="advanced: the model's input side in pixels, a multiple of 64 (default: the model's own, "
                    "1024); smaller is faster and coarser (random-weight tests use 256)",
    )
    overlay: outputs.OverlayParams = Field(default_factory=outputs.OverlayParams, description="overlay drawing")

    _fill_checkpoint_sha256 = model_validator(mode="after")(fill_checkpoint_sha256)


def open_propagator(name: str, device: str | None, checkpoint=None, image_size: int | None = None, emit=None):
    """The SAM 2 propagation engine (:func:`segdeck.core.sam.video.open_propagator`).

    A module-level seam so tests can give the job another engine with the same methods
    (``set_references``, ``predict``, ``close``).
    """
    from segdeck.core.sam.video import open_propagator as _open

    return _open(name, device, checkpoint=checkpoint, image_size=image_size, emit=emit)


@dataclass
class GroupPlan:
    """What the job does with one group.

    Attributes
    ----------
    group : Group
    references : list of (Row, ReferenceEntry)
        Usable labelled references, key order.
    targets : list of Row
        The group's other rows (after ``max_frames``).
    problems : list of str
        Why the group (or a reference) cannot be used.
    fingerprint : str
        Digest of the references' files and the settings the outputs depend on.
    """

    group: Group
    references: list[tuple[Row, ReferenceEntry]] = field(default_factory=list)
    targets: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def ready(self) -> bool:
        return any(entry.ids for _, entry in self.references)

    @property
    def status(self) -> str:
        """``"ready"`` or ``"skipped: no labelled reference with an object"``, then the problems."""
        head = "ready" if self.ready else "skipped: no labelled reference with an object"
        return "; ".join([head, *self.problems])

    @property
    def object_ids(self) -> list[int]:
        return sorted({i for _, e in self.references for i in e.ids})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan_groups(project: Project, store: ReferenceStore, max_frames: int | None = None) -> list[GroupPlan]:
    """The per-group plan: usable references, targets, problems.

    A labelled reference is usable when its image exists, its label map reads back with
    the IDs of its JSON, and its size equals the image's upright size. Labelled files
    of keys no longer in the group are ignored (named in ``problems``).

    Raises
    ------
    SpecError
        A reference JSON that cannot be read (one line naming it).
    """
    plans = []
    settings = json.dumps({"model": project.spec.model, "mask_mode": project.spec.mask_mode}, sort_keys=True)
    for group in project.groups:
        plan = GroupPlan(group)
        try:
            labelled = store.labelled(group)
        except SegdeckError as exc:
            raise SpecError(str(exc)) from None
        keys = {r.key: r for r in group.rows}
        digest = hashlib.sha256(settings.encode())
        for key, entry in sorted(labelled.items()):
            row = keys.get(key)
            if row is None:
                plan.problems.append(f"reference {key!r} is not a row of this group (ignored)")
                continue
            if not row.path.is_file():
                plan.problems.append(f"reference {key!r}: image {row.relpath!r} is missing")
                continue
            try:
                _labels, entry = store.load(group, key)
                size = imageio.image_size(row.path)
            except SegdeckError as exc:
                plan.problems.append(f"reference {key!r}: {exc}")
                continue
            if size != (entry.width, entry.height):
                plan.problems.append(f"reference {key!r}: label map {entry.width}x{entry.height} but the upright "
                                     f"image is {size[0]}x{size[1]}")
                continue
            plan.references.append((row, entry))
            digest.update(f"{key}\0{_sha(entry.labels_path)}\0{row.relpath}\0".encode())
        used = {r.key for r, _ in plan.references} | set(labelled)
        targets = [r for r in group.rows if r.key not in used]
        plan.targets = targets[:max_frames] if max_frames else targets
        plan.fingerprint = digest.hexdigest()[:16]
        plans.append(plan)
    return plans


def plan_table(project: Project, plans: list[GroupPlan]) -> list[str]:
    """The dry run's per-group table, one line per group plus a header (plain text)."""
    missing = {r.key for r in project.missing}
    width = max([len("group"), *(len(p.group.label) for p in plans)])
    lines = [f"{'group':<{width}}  {'images':>6}  {'refs':>7}  {'objects':<12}  {'targets':>7}  "
             f"{'missing':>7}  status"]
    for p in plans:
        refs = f"{len(p.references)}/{min(project.spec.references, len(p.group.rows))}"
        ids = ",".join(map(str, p.object_ids)) or "-"
        gone = sum(r.key in missing for r in p.group.rows)
        lines.append(f"{p.group.label:<{width}}  {len(p.group.rows):>6}  {refs:>7}  {ids:<12}  "
                     f"{len(p.targets):>7}  {gone:>7}  {p.status}")
    return lines


class PropagateJob(Job):
    """Label maps for every image of each group from a few labelled references (SAM 2)."""

    name = "propagate"
    Params = PropagateParams
    description = (
        "propagate the labelled reference masks of each group (segdeck annotate refs) to every other "
        "image of the group with SAM 2's memory; label maps, overlays, per-object CSV, COCO RLE"
    )
    input_help = "a project spec (TOML: csv, key, path or template, group_by, root, ...; see the README)"
    #: Settings of the project spec, not parameters: `--set mask_mode=...` says so.
    input_settings = ("csv", "key", "path", "template", "group_by", "root", "model", "mask_mode", "references",
                      "seed", "refs_dir")
    tui_model_field = ""  # the model is the spec's
    tui_input_files = (".toml",)  # the folder tree lists spec files
    tui_annotate = "refs"  # `a` on a spec: segdeck annotate refs SPEC
    # the refs window loads the spec's model: with the form's fine-tuned weights, if any
    tui_annotate_fields = {"checkpoint": "--checkpoint", "model": "--model"}
    tui_field_notes = {
        "dry_run": "checks the spec, CSV, files and references and prints a table per group; loads no model",
        "image_size": "leave empty for trained weights (1024); small sizes are for quick trials",
    }
    #: ``--executor ray``: the model lives on the workers; the driver lists, writes and
    #: finalizes from the spec alone.
    setup_on_driver = False

    @classmethod
    def check_input(cls, input_path: Path) -> None:
        """A project spec TOML whose CSV reads and validates (no image is decoded).

        Raises
        ------
        ValueError
            Not a file, not ``.toml``, or any :class:`~.spec.SpecError`.
        """
        if not input_path.exists():
            raise ValueError(f"input {input_path} does not exist")
        if not input_path.is_file() or input_path.suffix.lower() != ".toml":
            raise ValueError(not_a_spec_line(input_path))
        load_project(input_path)

    @classmethod
    def name_parts(cls, params) -> list[str]:
        parts = []
        if params.checkpoint_sha256:
            parts.append(f"ckpt{params.checkpoint_sha256[:8]}")
        if params.dry_run:
            parts.append("dry-run")
        if params.max_frames:
            parts.append(f"max{params.max_frames}")
        if params.image_size:
            parts.append(f"s{params.image_size}")
        return parts

    # ---- items --------------------------------------------------------------------
    def _prepare(self) -> None:
        """Read the project, the references and the per-group plan (list_items on the
        driver; setup on a Ray worker, which never lists the items)."""
        self.project = load_project(self.input_path)
        self.store = ReferenceStore(self.project.refs_dir)
        self.plans = plan_groups(self.project, self.store, self.params.max_frames)
        self._plan_of = {p.group.slug: p for p in self.plans}
        self.notes: list[tuple[str, str]] = []
        if self.project.missing:
            self.notes.append((self.project.missing_text(), "warning"))
        for p in self.plans:
            if not p.ready:
                n = len(p.targets)
                self.notes.append((f"group {p.group.label}: {p.status} ({n} image{'s' * (n != 1)} not written)",
                                   "warning"))
            elif p.problems:
                self.notes.append((f"group {p.group.label}: {'; '.join(p.problems)}", "warning"))
        self._order: list[str] = [r.key for p in self.plans if p.ready for r in p.targets]
        self._index = {k: n for n, k in enumerate(self._order)}
        self._target_group = {r.key: p.group.slug for p in self.plans if p.ready for r in p.targets}

    def list_items(self) -> list[Item]:
        self._prepare()
        self._notes_pending = True
        if self.params.dry_run:
            bad = [p for p in self.plans if not p.ready]
            if bad:
                raise SpecError("\n".join([
                    f"dry run: {len(bad)} of {len(self.plans)} groups cannot be propagated "
                    f"(label references with `segdeck annotate refs {self.input_path}`)",
                    *plan_table(self.project, self.plans),
                    *(text for text, _level in self.notes if not text.startswith("group "))]))
            return []
        if not any(p.ready for p in self.plans):
            raise SpecError(
                f"{self.input_path}: no group has a labelled reference with an object yet "
                f"({len(self.plans)} group(s), references in {self.project.refs_dir}); "
                f"label them with `segdeck annotate refs {self.input_path}`"
            )
        self._check_state()
        return [Item(r.key, paths=[r.path], row=r.values) for p in self.plans if p.ready for r in p.targets]

    def _state(self) -> dict:
        return {"spec": str(self.project.spec_path), "model": self.project.spec.model,
                "mask_mode": self.project.spec.mask_mode,
                "groups": {p.group.slug: p.fingerprint for p in self.plans if p.ready}}

    def _check_state(self) -> None:
        """Refuse to mix outputs of changed references or settings into a folder that has
        done items from the earlier ones. Read-only: :meth:`write` records the state with
        the first output of a run, so listing the items (as ``segdeck view`` does) writes
        nothing."""
        from segdeck.core.jobs.manifest import MANIFEST_NAME, Manifest

        self._state_pending = True
        old = self._read_state()
        if not old:
            return
        new = self._state()
        changed = [p for p in self.plans if p.ready
                   and old.get("groups", {}).get(p.group.slug) not in (None, p.fingerprint)]
        if old.get("model") != new["model"] or old.get("mask_mode") != new["mask_mode"]:
            changed = [p for p in self.plans if p.ready]
        if not changed or not (self.job_dir / MANIFEST_NAME).exists():
            return
        with Manifest(self.job_dir, readonly=True) as m:
            done = m.done_items()
        stale = [p for p in changed if any(r.key in done for r in p.group.rows)]
        if stale:
            raise SpecError(
                f"{self.job_dir}: the references or settings of group {stale[0].group.label} changed since "
                f"its images were done here ({len(stale)} group(s)); run with --fresh to redo them, "
                "or give --out another folder"
            )

    def _read_state(self) -> dict | None:
        try:
            return json.loads((self.job_dir / STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _record_state(self) -> None:
        """Write ``propagate.json`` (this run's settings and reference fingerprints, merged
        over the groups recorded before); once per run, before its first output."""
        if not getattr(self, "_state_pending", False):
            return
        old = self._read_state() or {}
        new = self._state()
        new["groups"] = {**old.get("groups", {}), **new["groups"]}
        imageio.write_text_atomic(self.job_dir / STATE_NAME, json.dumps(new, indent=1, sort_keys=True))
        self._state_pending = False

    def load(self, item):
        return imageio.load_rgb(item.paths[0])

    def output_stem(self, item: str) -> str:
        return file_slug(item)

    def expected_outputs(self, item: str) -> list[str] | None:
        names = outputs.output_names(self.output_stem(item), self.params.overlay.format)
        keys = ["labels", "overlay", "csv", "part"] if self.params.overlay.enabled else ["labels", "csv", "part"]
        return [names[k] for k in keys]

    # ---- life cycle -----------------------------------------------------------------
    def setup(self, emit: Sink) -> None:
        if not hasattr(self, "project"):  # a Ray worker: the driver listed the items
            self._prepare()
        self._emit_notes(emit)
        if self.params.dry_run:
            return
        p = self.params
        device = None if p.device == "auto" else p.device
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise SetupError("device = cuda but no CUDA device is available; use device = auto or cpu")
        from segdeck.core.models import model_path

        model = self.project.spec.model
        if p.checkpoint is None and model_path(model) is None:
            emit(Message(text=f"model {model} is not cached: downloading"))
        self.prop = open_propagator(model, device, checkpoint=p.checkpoint, image_size=p.image_size, emit=emit)
        if p.checkpoint is not None and self.prop.spec.sha256 != p.checkpoint_sha256:
            raise SetupError(f"checkpoint {p.checkpoint} changed since the job was set up (sha256 differs); run it again")
        self._group: str | None = None
        self._cache: dict[str, np.ndarray] = {}
        weights = f", weights {p.checkpoint}" if p.checkpoint else ""
        size = f", input size {p.image_size}" if p.image_size else ""
        where = getattr(self.prop, "device", device or "auto")
        emit(Message(text=f"model {model} loaded ({where}{weights}{size})"))

    def _emit_notes(self, emit: Sink) -> None:
        """The listing's warnings (missing images, skipped groups), once, on the driver."""
        if not getattr(self, "_notes_pending", False):
            return
        self._notes_pending = False
        for text, level in self.notes:
            emit(Message(text=text, level=level))

    def _set_group(self, plan: GroupPlan) -> None:
        if self._group == plan.group.slug:
            return
        mode = self.project.spec.mask_mode
        refs = []
        for row, _entry in plan.references:
            loaded = self.store.load(plan.group, row.key)
            if loaded is None:
                raise SetupError(f"reference {row.key!r} of group {plan.group.label} vanished during the run")
            refs.append((imageio.load_rgb(row.path), reference_labels(loaded[0], mode)))
        self._cache.clear()
        self._group = None
        self.prop.set_references(refs)
        self._group = plan.group.slug

    def process(self, item, data):
        from segdeck.core import regions

        row = self.project.row(str.__str__(item))
        plan = self._plan_of[self.project.group_of(row).slug]
        self.step(1, 3, "references")
        self._set_group(plan)
        self.step(2, 3, "propagate")
        key = row.key
        if key in self._cache:
            pred = self._cache.pop(key)
        else:
            batch = [key]
            start = self._index[key] + 1
            images = [data]
            for other in self._order[start:start + self.params.batch_size - 1]:
                if self._target_group[other] != plan.group.slug or other in self._cache:
                    continue
                try:  # a bad neighbour fails on its own turn, not this item
                    images.append(imageio.load_rgb(self.project.row(other).path))
                except (SegdeckError, OSError):
                    continue
                batch.append(other)
            maps = self.prop.predict(images)
            for k, m in zip(batch[1:], maps[1:], strict=True):
                self._cache[k] = m
            pred = maps[0]
            while len(self._cache) > self.params.batch_size:  # a resumed run skipped some: drop the oldest
                self._cache.pop(next(iter(self._cache)))
        pred = np.asarray(pred)
        if pred.shape != data.shape[:2]:
            raise RuntimeError(f"the engine returned a {pred.shape} map for a {data.shape[:2]} image")
        labels = apply_mode(pred, self.project.spec.mask_mode)
        stats = regions.label_stats(labels, regions.aggregate_map(data))
        self.step(3, 3, "propagate")
        return data, labels, stats, row, plan.group.label

    def write(self, item: str, result) -> list[str]:
        image, labels, stats, row, group_label = result
        self._record_state()
        stem = self.output_stem(item)
        ov = self.params.overlay
        names = outputs.output_names(stem, ov.format)
        written = []
        imageio.write_label_map(self.job_dir / names["labels"], labels)
        written.append(names["labels"])
        if ov.enabled:
            from segdeck.core.render import draw_overlay

            canvas = draw_overlay(image, labels, stats, fill_alpha=ov.fill_alpha,
                                  contour_thickness=ov.contour_thickness, text=ov.text,
                                  max_text_labels=ov.max_text_labels)
            imageio.write_image(self.job_dir / names["overlay"], canvas)
            written.append(names["overlay"])
        imageio.write_text_atomic(self.job_dir / names["csv"], outputs.regions_csv(stats))
        written.append(names["csv"])
        rles = outputs.label_map_rles(labels, [s.label for s in stats])
        anns = []
        for rle, stat in zip(rles, stats, strict=True):
            anns += outputs.coco_annotations([rle], [stat], category_id=int(stat.label))
        h, w = labels.shape
        record = {"file_name": row.relpath, "width": int(w), "height": int(h), "key": row.key,
                  "group": group_label, "annotations": anns}
        imageio.write_text_atomic(self.job_dir / names["part"], json.dumps(record, ensure_ascii=False))
        written.append(names["part"])  # the sidecar last: the runner's completeness marker
        return written

    def finalize(self, emit: Sink) -> list[str]:
        self._emit_notes(emit)
        if self.params.dry_run:
            for line in plan_table(self.project, self.plans):
                emit(Message(text=line))
            emit(Message(text=f"dry run: {len(self.plans)} group(s) ready, "
                              f"{sum(len(p.targets) for p in self.plans)} images to propagate; no model loaded"))
            return []
        stems = [self.output_stem(k) for k in self._order]
        doc = outputs.assemble_coco(self.job_dir, stems=stems,
                                    description=f"segdeck propagate ({self.project.spec.model}, "
                                                f"{self.project.spec.mask_mode})")
        if doc is None:
            return []
        # the categories of every ready group's references (not only the ids predicted so
        # far), so partial and resumed runs share one category list
        mode = self.project.spec.mask_mode
        found = {int(a["category_id"]) for a in doc["annotations"]}
        if mode == "position":
            found |= set(QUADRANT_NAMES)
        elif mode == "binary":
            found |= {1}
        else:
            found |= {i for p in self.plans if p.ready for i in p.object_ids}
        ids = sorted(found)
        doc["categories"] = [
            {"id": i, "name": QUADRANT_NAMES.get(i, f"object {i}") if mode == "position" else
             ("object" if mode == "binary" else f"object {i}"), "supercategory": "object"}
            for i in ids
        ]
        imageio.write_text_atomic(self.job_dir / outputs.COCO_NAME, json.dumps(doc, ensure_ascii=False))
        return [outputs.COCO_NAME, self._write_table(doc)]

    def _write_table(self, doc: dict) -> str:
        """``regions.csv``: every done target's per-object rows with key, group, image and
        the ``coco.json`` annotation id."""
        done = [k for k in self._order
                if (self.job_dir / outputs.output_names(self.output_stem(k))["part"]).is_file()]
        ann_ids = {(a["image_id"], int(a["category_id"])): a["id"] for a in doc["annotations"]}
        buf = io.StringIO()
        fields = ["key", "group", "image", "annotation_id", *outputs.CSV_FIELDS]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for img, key in zip(doc["images"], done, strict=False):
            if img["file_name"] != self.project.row(key).relpath:  # an unreadable sidecar shifted the ids
                continue
            row = self.project.row(key)
            path = self.job_dir / outputs.output_names(self.output_stem(key))["csv"]
            try:
                with path.open(newline="", encoding="utf-8") as fh:
                    for r in csv.DictReader(fh):
                        writer.writerow({"key": key, "group": self.project.group_of(row).label,
                                         "image": img["file_name"],
                                         "annotation_id": ann_ids.get((img["id"], int(r["label"])), ""), **r})
            except (OSError, ValueError):
                continue
        imageio.write_text_atomic(self.job_dir / outputs.REGIONS_NAME, buf.getvalue())
        return outputs.REGIONS_NAME

    def teardown(self) -> None:
        prop = getattr(self, "prop", None)
        self.prop = None
        if prop is not None:
            prop.close()
