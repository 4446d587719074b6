"""Threshold selection: the curve of threshold vs similar pairs from a sample.

For a random sample of the folder every pair's similarity is computed; for each
threshold on a grid the curve records how many sample pairs are similar, how many
clusters (connected components of two or more images) and clustered images that
gives in the sample, and the size of the largest cluster. Estimates for the whole
folder scale the sample counts (pairs by ``N(N-1) / n(n-1)``, clusters and clustered
images by ``N / n``); they are rough for near-duplicates, whose groups a sample breaks
apart, and are labelled as estimates.

Automatic rule (headless runs without ``--threshold``)
------------------------------------------------------
Start from the method's calibrated default (:data:`DEFAULTS`); if at that threshold
the largest connected component of the sample holds more than
:data:`MAX_GIANT_FRACTION` of the sample, and more than two images (the sign of
chaining collapse; a pair alone is no chain), raise the
threshold to the smallest grid value where it does not. The chosen value and the
reason are logged and stored in the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from segdeck.core.cluster import graph, similarity
from segdeck.core.cluster.methods import REGISTRY, ThresholdMethod

#: Calibrated default thresholds per method (similarity scale of each method), from
#: each method's ``default_threshold``.
DEFAULTS: dict[str, float] = {m.name: m.default_threshold for m in REGISTRY.values() if isinstance(m, ThresholdMethod)}

#: The automatic rule refuses thresholds where one component holds more than this
#: fraction of the sample.
MAX_GIANT_FRACTION = 0.25

CURVE_JSON = "threshold_curve.json"
CURVE_PNG = "threshold_curve.png"


@dataclass
class ThresholdCurve:
    """Threshold vs similar pairs and cluster counts, measured on a sample.

    Attributes
    ----------
    method : str
    thresholds : list of float
        Ascending grid.
    pairs, clusters, clustered, largest : list of int
        In the sample, per threshold: similar pairs, clusters of >= 2 images, images in
        such clusters, size of the largest cluster.
    sample_size, total : int
        Images in the sample and in the folder.
    """

    method: str
    thresholds: list[float]
    pairs: list[int]
    clusters: list[int]
    clustered: list[int]
    largest: list[int]
    sample_size: int
    total: int
    auto: float | None = None
    rule: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def pair_scale(self) -> float:
        n, t = self.sample_size, self.total
        return (t * (t - 1)) / (n * (n - 1)) if n > 1 else 1.0

    def estimate(self, k: int) -> dict[str, float]:
        """Folder-level estimates at grid index ``k``: pairs, clusters, clustered images."""
        f = self.total / max(1, self.sample_size)
        return {
            "threshold": self.thresholds[k],
            "pairs": self.pairs[k] * self.pair_scale,
            "clusters": self.clusters[k] * f,
            "clustered": self.clustered[k] * f,
        }

    def index_of(self, threshold: float) -> int:
        """Grid index closest to ``threshold``."""
        return int(np.argmin(np.abs(np.asarray(self.thresholds) - threshold)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ThresholdCurve:
        return cls(**data)


def grid_for(method: str, sims: np.ndarray, steps: int = 40) -> np.ndarray:
    """Threshold grid of ``method``'s curve (its ``threshold_grid``: from the median sample
    similarity to the maximum; phash: whole bits)."""
    from segdeck.core.cluster.methods import get_method

    return get_method(method).threshold_grid(np.asarray(sims), steps)


def curve_from_pairs(
    method: str, n: int, i: np.ndarray, j: np.ndarray, sims: np.ndarray, total: int, grid: np.ndarray | None = None
) -> ThresholdCurve:
    """Build the curve from all pair similarities of a sample of ``n`` images.

    Parameters
    ----------
    i, j : array of int
        Pair indices into the sample (0..n-1).
    sims : array of float
        Similarity of each pair.
    total : int
        Images in the whole folder.
    """
    sims = np.asarray(sims, np.float64)
    grid = grid_for(method, sims) if grid is None else np.asarray(grid, np.float64)
    pairs, clusters, clustered, largest = [], [], [], []
    for t in grid:
        keep = sims >= t - 1e-12
        _, labels = graph.connected_components(n, np.asarray(i)[keep], np.asarray(j)[keep])
        sizes = np.bincount(labels, minlength=1) if n else np.zeros(0, int)
        multi = sizes[sizes >= 2]
        pairs.append(int(keep.sum()))
        clusters.append(int(len(multi)))
        clustered.append(int(multi.sum()))
        largest.append(int(sizes.max()) if len(sizes) else 0)
    curve = ThresholdCurve(method, [float(t) for t in grid], pairs, clusters, clustered, largest, int(n), int(total))
    curve.auto, curve.rule = auto_threshold(curve)
    return curve


def sample_indices(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A sorted random sample of ``min(n, size)`` indices (fixed seed)."""
    rng = np.random.default_rng(seed)
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def curve_from_features(method: str, feats: Sequence[dict], sample_size: int = 200, seed: int = 0) -> ThresholdCurve:
    """Sample the features, compare every sample pair and build the curve."""
    idx = sample_indices(len(feats), sample_size, seed)
    gi, gj, sims = similarity.all_pairs(method, feats, idx)
    pos = {int(g): k for k, g in enumerate(idx)}
    li = np.array([pos[int(a)] for a in gi], np.int64)
    lj = np.array([pos[int(b)] for b in gj], np.int64)
    return curve_from_pairs(method, len(idx), li, lj, sims, len(feats))


def auto_threshold(curve: ThresholdCurve) -> tuple[float, str]:
    """The automatic threshold and a one-line reason (see the module docstring)."""
    t = np.asarray(curve.thresholds)
    default = DEFAULTS.get(curve.method, float(np.median(t)) if len(t) else 0.5)
    if not len(t):
        return default, f"method default {default:.4g} (empty sample)"
    # a pair is never a chain: below 8 images 25 % of the sample is less than two images,
    # and every grid value would be refused up to the sample's most similar pair
    limit = max(MAX_GIANT_FRACTION * max(1, curve.sample_size), 2)
    start = int(np.searchsorted(t, default - 1e-9))
    if start == len(t):  # the grid ends at the most similar sample pair: none reaches the default
        return default, (f"method default {default:.4g}: no sample pair reaches it "
                         f"(most similar {t[-1]:.4g}; largest sample cluster 1 of {curve.sample_size} images)")
    for k in range(start, len(t)):
        if curve.largest[k] <= limit:
            if k == start:
                return default, (f"method default {default:.4g}: largest sample cluster "
                                 f"{curve.largest[k]} of {curve.sample_size} images")
            return float(t[k]), (f"raised from the default {default:.4g} to {t[k]:.4g}: below it one "
                                 f"cluster held more than {MAX_GIANT_FRACTION:.0%} of the sample (chaining)")
    return float(t[-1]), f"highest grid value {t[-1]:.4g}: every lower threshold chains the sample together"


def save_curve(curve: ThresholdCurve, job_dir: str | Path, chosen: float | None = None) -> list[str]:
    """Write ``threshold_curve.json`` and ``threshold_curve.png`` (matplotlib, Agg).

    The plot is the classic threshold curve: threshold on the y axis, similar pairs
    (estimated for the folder) on the x axis, estimated clusters annotated.

    Returns
    -------
    list of str
        File names written (relative to ``job_dir``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from segdeck.core.imageio import atomic_path, write_text_atomic

    job_dir = Path(job_dir)
    data = curve.to_dict()
    data["chosen"] = chosen
    write_text_atomic(job_dir / CURVE_JSON, json.dumps(data, indent=1))
    est = [curve.estimate(k) for k in range(len(curve.thresholds))]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot([e["pairs"] for e in est], curve.thresholds, marker=".", color="tab:blue")
    ax.set_xscale("symlog")
    ax.set_xlabel("similar pairs (estimated for the folder)")
    ax.set_ylabel(f"{curve.method} similarity threshold")
    step = max(1, len(est) // 8)
    for k in range(0, len(est), step):
        ax.annotate(f"{est[k]['clusters']:.0f} cl", (est[k]["pairs"], curve.thresholds[k]), fontsize=7,
                    xytext=(4, 0), textcoords="offset points")
    if chosen is not None:
        ax.axhline(chosen, color="tab:red", lw=1, ls="--", label=f"chosen {chosen:.4g}")
        ax.legend(loc="lower left")
    ax.set_title(f"{curve.method}: sample of {curve.sample_size} of {curve.total} images")
    fig.tight_layout()
    with atomic_path(job_dir / CURVE_PNG) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return [CURVE_JSON, CURVE_PNG]
