"""The main screen's controllers: its non-visual parts, one concern each.

Each controller is a :class:`~segdeck.tui.controllers.base.Controller`, a widget
without a look (``display: none``) mounted in :class:`~segdeck.tui.screens.main.MainScreen`.
Their thread workers compute and only ``post_message`` small dataclass messages; what
the screen must do with a result (fill the job picker, show a curve, rescan the
folders) reaches it as such a message bubbling up from the controller.

- :mod:`~segdeck.tui.controllers.jobs`: the job classes, the poll of the job folders,
  launching / re-running / cancelling jobs.
- :mod:`~segdeck.tui.controllers.curve`: the threshold curve computed on a sample.
- :mod:`~segdeck.tui.controllers.annotate`: ``segdeck annotate`` started from the TUI and
  its output in the log pane.
- :mod:`~segdeck.tui.controllers.models`: the form's model field (its cache note, the
  model picker).
"""
