"""The base class of the main screen's controllers."""

from __future__ import annotations

from textual.widget import Widget


class Controller(Widget):
    """A widget without a look that runs workers and handles messages for a screen.

    Its class ``controller`` hides it (``app.tcss``). Messages its workers post reach
    its own handlers first, then bubble to the screen.

    Parameters
    ----------
    **kwargs
        Passed to :class:`textual.widget.Widget` (``id``, ``name``).
    """

    can_focus = False

    def __init__(self, **kwargs):
        super().__init__(classes="controller", **kwargs)

    def render(self) -> str:
        return ""
