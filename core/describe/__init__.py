"""Region description: sweep an image with point prompts, segment each region in turn,
describe each region with a vision-language model, report.

* :mod:`.points`: point proposals (contour interior points, largest first; a grid);
* :mod:`.sweep`: sequential SAM segmentation with claimed pixels (no overlaps);
* :mod:`.describers`: the describers (OpenAI-compatible servers, Describe Anything,
  none) behind one interface;
* :mod:`.report`: the per-image outputs (visualisation, text report, JSON lines);
* :mod:`.job`: the ``describe`` job (``segdeck run describe INPUT``).

Import-light: nothing heavy is imported by this package or its params.
"""
