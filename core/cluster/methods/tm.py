"""``tm``: template matching (``cv2.TM_SQDIFF_NORMED``) of the centre of one thumbnail
over the other, both ways; every pair compared."""

from __future__ import annotations

from segdeck.core.cluster.methods.base import PairwiseMethod, register


class TemplateMatching(PairwiseMethod):
    name = "tm"
    description = "template matching of thumbnails (every pair)"
    side = 128
    default_threshold = 0.9

    def extract(self, image, params=None, job=None) -> dict:
        from segdeck.core.cluster.features import tm_feature

        return tm_feature(image)

    def pair(self, fa, fb) -> float:
        from segdeck.core.cluster.similarity import tm_similarity

        return tm_similarity(fa, fb)


register(TemplateMatching())
