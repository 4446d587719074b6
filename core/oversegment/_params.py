"""The base of every over-segmentation method's parameter model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MethodParams(BaseModel):
    """Parameters of one over-segmentation method.

    Unknown fields are refused (a typo in ``--set`` is an error, not a silent default)
    and every assignment is validated (the TUI form edits the model in place). Sizes
    are in working-resolution pixels (see :func:`segdeck.core.oversegment.segment`).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
