"""``orb``: share of ORB matches that pass Lowe's ratio test; every pair compared."""

from __future__ import annotations

from segdeck.core.cluster.methods.base import PairwiseMethod, register


class ORB(PairwiseMethod):
    name = "orb"
    description = "ORB keypoint matches passing the ratio test (every pair)"
    side = 256
    default_threshold = 0.3

    def extract(self, image, params=None, job=None) -> dict:
        from segdeck.core.cluster.features import orb_feature

        return orb_feature(image)

    def pair(self, fa, fb) -> float:
        from segdeck.core.cluster.similarity import orb_similarity

        return orb_similarity(fa, fb)


register(ORB())
