"""``ssim``: structural similarity (``skimage.metrics.structural_similarity``) of 64 x 64
grayscale thumbnails; every pair compared."""

from __future__ import annotations

from segdeck.core.cluster.methods.base import PairwiseMethod, register


class SSIM(PairwiseMethod):
    name = "ssim"
    description = "structural similarity of thumbnails (every pair; slow, for small folders)"
    side = 128
    default_threshold = 0.65

    def extract(self, image, params=None, job=None) -> dict:
        from segdeck.core.cluster.features import ssim_feature

        return ssim_feature(image)

    def pair(self, fa, fb) -> float:
        from segdeck.core.cluster.similarity import ssim_similarity

        return ssim_similarity(fa, fb)


register(SSIM())
