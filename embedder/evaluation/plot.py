"""A picture of the vectors: a 2-D projection of features.parquet, coloured by role.

t-SNE (scikit-learn) when there are few enough points for it to be quick, PCA otherwise.
Needs matplotlib: `pip install embedder[plot]`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import EmbedderError
from ..features import encoder_columns, features_path, load_features, resolve_encoders

TSNE_LIMIT = 5000     # up to this many points, t-SNE; above, PCA
MAX_POINTS = 50_000   # more than this are sampled (seeded): a scatter plot cannot show more
DPI = 100
COLOURS = {"question": "#1f77b4", "answer": "#ff7f0e"}


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise EmbedderError("plotting needs matplotlib: pip install embedder[plot]") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def project(X: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates and the name of the method used."""
    n = len(X)
    if n < 3:
        return np.c_[np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], "none"
    if method == "auto":
        method = "t-SNE" if n <= TSNE_LIMIT else "PCA"
    if method == "PCA":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(X), "PCA"
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine")
    return tsne.fit_transform(X), "t-SNE"


def plot(out_dir: str | os.PathLike, path: str | os.PathLike = "embedding.png", encoder: str | None = None,
         width: int = 1000, height: int = 800, method: str = "auto", seed: int = 0) -> Path:
    """Write a PNG of `width` × `height` pixels: the encoder's vectors projected to 2-D."""
    if width < 100 or height < 100 or width > 20000 or height > 20000:
        raise EmbedderError(f"image size {width}×{height}: width and height must be 100–20000 pixels")
    if method not in ("auto", "PCA", "t-SNE"):
        raise EmbedderError(f"projection {method!r}: expected auto, PCA or t-SNE")
    plt = _matplotlib()
    fpath = features_path(out_dir)
    available = encoder_columns(fpath)
    encoder = encoder or next(iter(available), None)
    if encoder is None:
        raise EmbedderError(f"{fpath}: holds no encoder vectors")
    name = resolve_encoders([encoder], available, fpath)[0]
    X, meta = load_features(fpath, encoders=name)
    if len(X) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), MAX_POINTS, replace=False))
        X, meta = X[keep], meta.iloc[keep].reset_index(drop=True)
    P, used = project(X, method, seed)

    corpus = _corpus_name(fpath)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    try:
        ax = fig.add_subplot(1, 1, 1)
        roles = meta["role"].to_numpy()
        for role in sorted(set(roles), key=lambda r: (r not in COLOURS, r)):
            m = roles == role
            ax.scatter(P[m, 0], P[m, 1], s=12, alpha=0.7, c=COLOURS.get(role), label=f"{role} ({int(m.sum())})",
                       edgecolors="none")
        ax.legend(loc="best", title="role")
        ax.set_title(f"{name} vectors of {corpus} — {used}, {len(X)} utterances")
        ax.set_xticks([])
        ax.set_yticks([])
        target = Path(path)
        with atomic_path(target) as tmp:
            # no bbox_inches="tight": the image must be exactly width × height pixels
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return target


def _corpus_name(fpath: Path) -> str:
    mf = fpath.parent / "embed.json"
    try:
        corpus = json.loads(mf.read_text(encoding="utf-8")).get("corpus") or []
        names = [Path(c).name for c in corpus]
        if names:
            return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
    except (OSError, ValueError, AttributeError):
        pass
    return fpath.parent.name
