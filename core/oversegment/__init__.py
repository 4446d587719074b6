"""Classical over-segmentation: one module per method, one registry.

Every method takes an (H, W, 3) uint8 RGB image and its own pydantic params model
and returns an (H, W) int32 label map: 0 = edge / unassigned pixels, 1..N segments.

Use :func:`segment` (works at a bounded working resolution and maps the labels back
to full resolution) rather than calling a method module directly.
"""
