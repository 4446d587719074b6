"""``deep``: the embedding of a pretrained EfficientNet-Lite0 (the default), of a
pretrained ResNet-18 or of an autoencoder trained on the folder beside colour and
texture descriptors, or the descriptors alone (:mod:`segdeck.core.cluster.deep`),
clustered by model selection over five algorithms
(default score: modularity on the nearest-neighbour graph); with ``--threshold``,
images whose embeddings' cosine similarity reaches the threshold are linked instead
(HNSW search above a few thousand images); without an embedding, the descriptors
centred over the folder are compared."""

from __future__ import annotations

import numpy as np

from segdeck.core.cluster.methods.base import Clustering, IndexedMethod, register


def single_threaded_torch(job) -> None:
    """Run torch's CPU operators on one thread for the rest of the job.

    The pretrained networks embed one image per call (one item at a time, beside the
    prefetch thread that decodes the next ones); torch's thread pool then spends more
    time synchronising than computing. Measured with EfficientNet-Lite0 on this 2-core
    machine, one 224 x 224 image per call: 19.5 ms on one thread against 147 ms on two
    while another process was busy. The job runs in its own process (the CLI, or a TUI
    child process); :func:`restore_torch_threads` ends the limit.
    """
    import torch

    if getattr(job, "_torch_threads", None) is None:
        job._torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)


def restore_torch_threads(job) -> None:
    """Undo :func:`single_threaded_torch`."""
    n = getattr(job, "_torch_threads", None)
    if n is not None:
        import torch

        torch.set_num_threads(n)
        job._torch_threads = None


class Deep(IndexedMethod):
    name = "deep"
    description = "pretrained EfficientNet-Lite0 embedding + colour/texture descriptors, clustering model selection"
    has_curve = False
    needs_model = True
    default_threshold = 0.9

    def name_part(self, params) -> str:
        return ""

    #: Options only the autoencoder reads.
    AUTOENCODER_ONLY = ("loss", "backbone", "latent", "epochs", "batch", "lr", "train_max")

    def ignored_params(self, params) -> set[str]:
        # a changed option the chosen features never read reuses the job folder
        d = params.deep
        out = super().ignored_params(params)
        if d.features != "autoencoder":
            out |= {f"deep.{f}" for f in self.AUTOENCODER_ONLY}
        if d.features == "efficientnet":
            out.add("deep.image_size")  # fixed input and decode side
        if d.features == "descriptors":
            out |= {"deep.embedding_weight", "deep.weights"}
        return out

    def feature_key(self, params, model_digest: str = "") -> str:
        d = params.deep
        size = 0 if d.features == "efficientnet" else d.image_size  # decode side (efficientnet: fixed)
        weights = "-" if d.features == "descriptors" else d.weights  # what the run folder's name reads too
        # v4: the networks' inputs are enlarged bicubically (v3: by area), a new embedding
        return f"deep:v4:{d.features}:{weights}:{size}:{model_digest}"

    def decode_side(self, params) -> int:
        from segdeck.core.cluster import deep

        if params.deep.features == "efficientnet":
            return deep.EFFICIENTNET["input"]
        return max(2 * params.deep.image_size, 128)

    # ---- model ---------------------------------------------------------------------
    def ready_digest(self, job) -> str:
        from segdeck.core.cluster import deep

        d = job.params.deep
        if d.features == "descriptors":
            return "descriptors"
        # random weights are seeded (_pretrained): "seed0" keeps them apart from cached
        # features of the unseeded random networks of earlier versions
        weights = "random-seed0" if d.weights == "random" else d.weights
        if d.features == "resnet18":
            return f"resnet18-{weights}"
        if d.features == "efficientnet":
            return f"efficientnet-lite0-{weights}-mirror-mean"
        path = job.job_dir / deep.AE_NAME
        return deep.file_digest(path) if path.is_file() else ""

    def teardown(self, job) -> None:
        restore_torch_threads(job)  # also when cluster() was never reached (cancel, no image)

    def setup(self, job, emit) -> None:
        """Load the backbone, or load / train the autoencoder (saved in the job folder);
        sets ``job.model`` and ``job.model_digest``. Descriptors need no model."""
        from segdeck.core.cluster import deep
        from segdeck.core.errors import SetupError
        from segdeck.core.jobs.base import ItemCancelled
        from segdeck.core.jobs.events import Message, Progress

        d = job.params.deep
        if d.features == "descriptors":
            job.model, job.model_digest = None, "descriptors"
            return
        if d.features in ("resnet18", "efficientnet"):
            job.model = self._pretrained(d, emit)
            job.model_digest = self.ready_digest(job)
            single_threaded_torch(job)
            return
        path = job.job_dir / deep.AE_NAME
        config = deep.model_config(d)
        model = deep.load_model(path, config)
        if model is not None:
            emit(Message(text=f"reusing the trained autoencoder {path.name}"))
        else:
            # the backbone first: a missing download fails before any slow step
            backbone = deep.build_backbone(d.backbone, d.weights, emit) if d.loss == "perceptual" else None
            items = job.list_items()
            rng = np.random.default_rng(0)
            if len(items) > d.train_max:
                items = [items[k] for k in sorted(rng.choice(len(items), d.train_max, replace=False))]
            images, used = [], []
            for k, item in enumerate(items):
                if job.cancel.is_set():
                    # a cancel is no error: the run ends as cancelled and the next one trains
                    raise ItemCancelled("cancelled while loading the training images")
                try:
                    images.append(self.load(job.item_path(item), job.params))
                    used.append(item)
                except Exception:  # noqa: BLE001 - unreadable files fail later, per item
                    continue
                if k % 50 == 0 or k == len(items) - 1:  # the bar ends at n/n
                    emit(Progress(what="load training images", done=k + 1, total=len(items)))
            if not images:
                raise SetupError("no readable image to train the autoencoder on")
            emit(Message(text=f"training the autoencoder on {len(images)} images ({d.epochs} epochs, {d.loss} loss)"))
            try:
                model, _ = deep.train_autoencoder(images, d, emit=emit, cancel=job.cancel, backbone=backbone)
            except deep.Cancelled:
                raise ItemCancelled("autoencoder training cancelled; nothing was clustered") from None
            deep.save_model(model, path, config, used)
        job.model = model
        job.model_digest = deep.file_digest(path)

    @staticmethod
    def _pretrained(d, emit):
        """The EfficientNet-Lite0 or ResNet-18 feature extractor; the log says where its
        weights came from (model cache, installed package, download) or that they are
        random (seeded: the same network in every process), and a missing file's line
        also names the way to cluster without one."""
        from segdeck.core import models
        from segdeck.core.cluster import deep
        from segdeck.core.errors import SetupError
        from segdeck.core.jobs.events import Message

        effnet = d.features == "efficientnet"
        title = "EfficientNet-Lite0" if effnet else "ResNet-18"
        if d.weights == "random":
            import torch

            # seeded: the feature cache and a resumed run mix embeddings of several processes
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                net = deep.build_efficientnet("random") if effnet else deep.build_backbone("resnet18", "random")
            emit(Message(text=f"{title} with random weights (--deep.weights random): an offline trial, "
                              "its embedding knows nothing of images"))
            return net
        deep.register_backbones()
        name = deep.EFFICIENTNET["name"] if effnet else deep.BACKBONES["resnet18"][0]
        origin = models.model_origin(name)
        try:
            net = deep.build_efficientnet("pretrained", emit) if effnet else deep.build_backbone("resnet18", "pretrained", emit)
        except SetupError as exc:
            raise SetupError(f"{exc}; or cluster without an embedding: --deep.features descriptors") from None
        emit(Message(text=f"{title} ImageNet weights ({name}) from {origin}"))
        return net

    def extract(self, image, params=None, job=None) -> dict:
        from segdeck.core.cluster import deep

        d = params.deep
        colour, texture = deep.colour_histogram(image), deep.texture_descriptors(image)
        if d.features == "descriptors":
            # no embedding: --threshold compares the descriptors centred over the folder (_centred)
            return {"colour": colour, "texture": texture}
        kind = {"autoencoder": "autoencoder", "efficientnet": "efficientnet"}.get(d.features, "backbone")
        size = {"autoencoder": d.image_size, "efficientnet": deep.EFFICIENTNET["input"]}.get(kind, 128)
        return {"emb": deep.embed(job.model, [image], size, kind)[0], "colour": colour, "texture": texture}

    # ---- similarity (with --threshold) -----------------------------------------------
    def pair(self, fa, fb) -> float:
        from segdeck.core.cluster.similarity import cosine_similarity

        return cosine_similarity(fa, fb)

    def all_pairs(self, feats, idx):
        idx = np.asarray(idx, np.int64)
        ii, jj = np.triu_indices(len(idx), 1)
        if not len(ii):
            return idx[ii], idx[jj], np.zeros(0)
        x = np.stack([feats[t]["emb"] for t in idx]).astype(np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return idx[ii], idx[jj], (x @ x.T)[ii, jj]

    def search(self, feats, idx, threshold):
        from segdeck.core.cluster.similarity import cosine_pairs

        return self.indexed_search(feats, idx, "emb", cosine_pairs, threshold)

    def approximation(self, n, threshold):
        from segdeck.core.cluster.similarity import BRUTE_LIMIT

        if n > BRUTE_LIMIT:
            return (f"deep: {n} embeddings searched with an HNSW index (30 neighbours each); an image "
                    "with more similar images keeps its nearest 30")
        return None

    # ---- clustering ------------------------------------------------------------------
    def cluster(self, job, items, feats, emit) -> Clustering:
        restore_torch_threads(job)
        if job.params.threshold is not None:
            if job.params.deep.features == "descriptors":
                feats = self._centred(job.params.deep, feats)
            return super().cluster(job, items, feats, emit)
        return self._select(job, feats, emit)

    @staticmethod
    def _centred(d, feats: list[dict]) -> list[dict]:
        """The descriptors as :func:`~segdeck.core.cluster.deep.combine` gives them
        (each block centred over the folder and scaled, then weighted) in ``"emb"``: the
        cosine similarity of raw histograms is high for any two images."""
        x = Deep._combined(d, feats).astype(np.float32)
        return [{**f, "emb": row} for f, row in zip(feats, x, strict=True)]

    @staticmethod
    def _combined(d, feats: list[dict]) -> np.ndarray:
        """:func:`~segdeck.core.cluster.deep.combine` of the features (the embedding
        unless ``features`` is ``descriptors``, the colour and texture descriptors)."""
        from segdeck.core.cluster import deep

        emb = None if d.features == "descriptors" else np.stack([f["emb"] for f in feats])
        return deep.combine(emb, np.stack([f["colour"] for f in feats]), d.colour_weight,
                            np.stack([f["texture"] for f in feats]), d.texture_weight,
                            d.embedding_weight_used)

    def _select(self, job, feats, emit) -> Clustering:
        from segdeck.core.cluster import deep, graph
        from segdeck.core.cluster.methods.base import warner
        from segdeck.core.jobs.events import Message

        d = job.params.deep
        x = self._combined(d, feats)
        runs: list[dict] = []

        def cluster_fn(idx: np.ndarray) -> np.ndarray:
            if job.cancel.is_set():
                return np.arange(len(idx))
            emit(Message(text=f"model selection on {len(idx)} images ({', '.join(d.algorithms)}, "
                              f"k {d.k_min}..{d.k_max}, metric {d.metric})"))
            labels, cands, best = deep.select_model(x[idx], d.algorithms, d.k_min, d.k_max, metric=d.metric,
                                                    n_neighbors=d.neighbours)
            runs.append({
                "images": int(len(idx)),
                "best": None if best is None else f"{best.algorithm} {best.setting}",
                "candidates": deep.candidates_to_dicts(cands),
            })
            emit(Message(text=f"model selection on {len(idx)} images: "
                              f"{'no valid candidate' if best is None else f'{best.algorithm} {best.setting}, {best.n_clusters} clusters'}"))
            return labels

        n = len(x)
        info: dict = {}
        if n > d.batch_size:
            warn = warner(emit)
            warn(f"deep: {n} images in batches of {d.batch_size} (--deep.batch-size): each batch picks its own "
                 "clustering and batches are merged through representatives (approximate)")
            labels = graph.cluster_in_batches(n, d.batch_size, cluster_fn, warn=warn)
        else:
            labels = cluster_fn(np.arange(n, dtype=np.int64))
            if runs and runs[-1]["best"] is None:
                reason = (f"no valid clustering: none of {len(runs[-1]['candidates'])} candidates "
                          f"({', '.join(d.algorithms)}, k {d.k_min}..{d.k_max}) found 2 or more clusters with at "
                          "most half of the images as noise" if n >= 3 else
                          f"no valid clustering: {n} image{' is' if n == 1 else 's are'} too few to cluster")
                emit(Message(text=f"{reason}; every image goes to outliers/", level="warning"))
                info["outliers_reason"] = reason
        rules = {"modularity": f"highest modularity on the {d.neighbours}-nearest-neighbour graph; "
                               "ties: higher silhouette",
                 "combined": "lowest sum of ranks under silhouette (high), Davies-Bouldin (low), "
                             "Calinski-Harabasz (high); ties: higher silhouette",
                 "silhouette": "highest silhouette", "davies_bouldin": "lowest Davies-Bouldin",
                 "calinski_harabasz": "highest Calinski-Harabasz"}
        info["deep"] = {"features": d.features, "loss": d.loss if d.features == "autoencoder" else None,
                        "embedding_weight": None if d.features == "descriptors" else d.embedding_weight_used,
                        "colour_weight": d.colour_weight, "texture_weight": d.texture_weight,
                        "metric": d.metric,
                        "ranking_rule": rules[d.metric] + (
                            " (noise points count as clusters of one: their edges are cut)" if d.metric == "modularity"
                            else " (scores charged for noise: x or / the clustered share)"),
                        "selections": runs}
        extra = [deep.AE_NAME] if (job.job_dir / deep.AE_NAME).is_file() else []
        return Clustering(labels, info, extra, None)


register(Deep())
