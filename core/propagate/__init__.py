"""Group propagation (issue 12): a project spec (TOML + metadata CSV) groups photos;
a few labelled reference images per group condition SAM 2's video predictor, which gives
every other image of the group a label map.

- :mod:`.spec`: :class:`ProjectSpec`, :func:`load_spec`, :func:`load_project` (CSV,
  image paths, groups), :func:`sample_references`, :func:`swap_reference`;
- :mod:`.references`: :class:`ReferenceStore` (reference label maps on disk);
- :mod:`.modes`: the mask modes (``original``, ``position``, ``binary``);
- :mod:`.job`: the ``propagate`` job (``segdeck run propagate SPEC``).

Importing this package imports nothing heavy.
"""

from segdeck.core.propagate.references import ReferenceEntry, ReferenceError, ReferenceStore
from segdeck.core.propagate.spec import (
    MASK_MODES,
    Group,
    Project,
    ProjectSpec,
    Row,
    SpecError,
    file_slug,
    load_project,
    load_spec,
    read_csv,
    sample_references,
    swap_reference,
)

__all__ = [
    "MASK_MODES", "Group", "Project", "ProjectSpec", "ReferenceEntry", "ReferenceError", "ReferenceStore", "Row",
    "SpecError", "file_slug", "load_project", "load_spec", "read_csv", "sample_references", "swap_reference",
]
