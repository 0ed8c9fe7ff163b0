"""A picture of the vectors that shows both things they are for (`embed plot`).

Left: the role panel. Its horizontal axis is the direction that best separates questions from
answers (linear discriminant analysis on the role labels), its vertical axis the largest spread
left once that direction is removed; the title gives the cross-validated accuracy of that same
linear probe. Right: the neighbourhood map (t-SNE for small sets, PCA otherwise), where a question
sits beside its own answer. A map of neighbourhoods alone shows no role separation, because the
encoders pull each question toward its answer; the role panel shows the separation a downstream
linear model actually gets.

PNG through matplotlib (`pip install embedder[plot]`); `html` through plotly, a standalone page
whose points show their text on hover.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import EmbedderError, check_range
from ..features import encoder_columns, feature_files, load_features, resolve_encoders

TSNE_LIMIT = 5000     # up to this many points, t-SNE; above, PCA
MAX_POINTS = 50_000   # more than this are sampled (seeded): a scatter plot cannot show more
MAX_LEGEND = 20       # a colour column with more values than this is drawn without a legend
DPI = 100
COLOURS = {"question": "#1f77b4", "answer": "#ff7f0e"}
FORMATS = ("png", "html")
METHODS = ("auto", "PCA", "t-SNE")


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise EmbedderError("plotting needs matplotlib: pip install embedder[plot]") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def project(X: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates of the neighbourhood map and the name of the method used."""
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


def role_axes(X: np.ndarray, roles: np.ndarray, groups: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float | None]:
    """(n, 2) coordinates of the role panel, and the probe's cross-validated accuracy (folds keep
    whole dialogues together; None when there are too few dialogues of either role to fold)."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    y = roles == "question"
    if y.all() or not y.any() or len(X) < 4:
        P = PCA(n_components=2, random_state=seed).fit_transform(X) if len(X) >= 2 else np.zeros((len(X), 2))
        return P, None
    # shrinkage keeps the covariance estimate sane when there are fewer points than dimensions
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(X, y)
    w = lda.scalings_[:, 0] / np.linalg.norm(lda.scalings_[:, 0])
    x = X @ w
    rest = X - np.outer(x, w)
    other = PCA(n_components=1, random_state=seed).fit_transform(rest)[:, 0]
    folds = min(5, *(len(np.unique(groups[y == c])) for c in (True, False)))
    accuracy = None
    if folds >= 2:
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        accuracy = float(cross_val_score(LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto"), X, y,
                                         groups=groups, cv=cv).mean())
    return np.c_[x - x.mean(), other], accuracy


def _colour_values(files: list[Path], meta, column: str, keep: np.ndarray | None) -> np.ndarray:
    """The values of any column of the features shards, row for row with the vectors."""
    if column in meta.columns:
        return meta[column].to_numpy()
    import pyarrow.dataset as ds

    fpath = files[0]
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    names = dataset.schema.names
    if column not in names:
        raise EmbedderError(f"{fpath}: no column {column!r} to colour by (columns: {', '.join(names)})")
    values = dataset.to_table(columns=[column]).column(column).to_numpy(zero_copy_only=False)
    if values.dtype == object and len(values) and isinstance(values[0], np.ndarray):
        raise EmbedderError(f"{fpath}: column {column!r} holds vectors, not labels")
    return values if keep is None else values[keep]


def plot(out_dir: str | os.PathLike, path: str | os.PathLike = "embedding.png", encoder: str | None = None,
         width: int = 1400, height: int = 700, method: str = "auto", seed: int = 0, color: str = "role",
         fmt: str | None = None) -> dict:
    """Write the two panels as a PNG of exactly `width` × `height` pixels, or a standalone HTML
    page (`fmt="html"`, or a path ending in .html). Returns what was drawn: the output path, the
    encoder, the probe's accuracy, the map's method and the number of points."""
    check_range("--width", width, 100, 20000)
    check_range("--height", height, 100, 20000)
    if method not in METHODS:
        raise EmbedderError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    fmt = fmt or ("html" if str(path).lower().endswith((".html", ".htm")) else "png")
    if fmt not in FORMATS:
        raise EmbedderError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    fpath = Path(out_dir)
    files = feature_files(fpath)
    available = encoder_columns(fpath)
    if not available:
        raise EmbedderError(f"{fpath}: holds no encoder vectors")
    name = resolve_encoders([encoder], available, fpath)[0] if encoder else next(iter(available))
    X, meta = load_features(fpath, encoders=name)
    keep = None
    if len(X) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), MAX_POINTS, replace=False))
        X, meta = X[keep], meta.iloc[keep].reset_index(drop=True)
    colours = _colour_values(files, meta, color, keep)
    roles = meta["role"].to_numpy()
    R, accuracy = role_axes(X, roles, meta["dialogue"].to_numpy(), seed)
    M, used = project(X, method, seed)
    probe = "too few dialogues to cross-validate" if accuracy is None else f"linear probe accuracy {accuracy:.2f} (CV)"
    titles = (f"question ↔ answer direction: {probe}", f"neighbourhoods ({used})")
    title = f"{name} vectors of {_corpus_name(fpath)}, {len(X)} utterances, coloured by {color}"
    draw = _html if fmt == "html" else _png
    target = Path(path)
    with atomic_path(target) as tmp:
        draw(tmp, R, M, colours, color, titles, title, meta["text"].to_numpy(), width, height)
    return {"output": str(target), "encoder": name, "role_accuracy": accuracy, "map": used, "points": len(X),
            "color": color, "format": fmt}


def _groups(values: np.ndarray) -> list[tuple[str, np.ndarray]] | None:
    """(label, mask) per value when there are few enough to name in a legend; None otherwise."""
    labels = [str(v) for v in values]
    distinct = sorted(set(labels), key=lambda r: (r not in COLOURS, r))
    if len(distinct) > MAX_LEGEND:
        return None
    arr = np.asarray(labels)
    return [(v, arr == v) for v in distinct]


def _png(tmp: Path, R, M, colours, color: str, titles, title: str, texts, width: int, height: int) -> None:
    plt = _matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(width / DPI, height / DPI), dpi=DPI)
    try:
        groups = _groups(colours)
        for ax, P, sub in zip(axes, (R, M), titles):
            if groups is None:
                codes = colours if np.issubdtype(np.asarray(colours).dtype, np.number) else \
                    np.unique(np.asarray(colours, dtype=str), return_inverse=True)[1]
                ax.scatter(P[:, 0], P[:, 1], s=10, alpha=0.7, c=codes, cmap="viridis", edgecolors="none")
            else:
                for label, m in groups:
                    ax.scatter(P[m, 0], P[m, 1], s=10, alpha=0.7, c=COLOURS.get(label), edgecolors="none",
                               label=f"{label} ({int(m.sum())})")
            ax.set_title(sub, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        if groups is not None:
            axes[1].legend(loc="best", title=color, fontsize=8)
        fig.suptitle(title, fontsize=11)
        # no bbox_inches="tight": the image must be exactly width × height pixels
        fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def _html(tmp: Path, R, M, colours, color: str, titles, title: str, texts, width: int, height: int) -> None:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        raise EmbedderError("--format html needs plotly: pip install embedder[plot]") from None
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    groups = _groups(colours) or [(None, np.ones(len(texts), bool))]
    for col, P in ((1, R), (2, M)):
        for label, m in groups:
            marker = {"size": 6, "opacity": 0.75}
            if label is None:
                marker.update(color=np.unique(np.asarray(colours, dtype=str), return_inverse=True)[1],
                              colorscale="Viridis")
            elif label in COLOURS:
                marker["color"] = COLOURS[label]
            fig.add_trace(go.Scatter(x=P[m, 0], y=P[m, 1], mode="markers", marker=marker, hovertext=texts[m],
                                     hoverinfo="text", name=label or color, legendgroup=label or color,
                                     showlegend=col == 1 and label is not None), row=1, col=col)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title, height=height, legend_title_text=color, template="plotly_white")
    # standalone (plotly.js inlined, so it opens offline); as wide as the window, up to `width`
    fig.write_html(str(tmp), include_plotlyjs=True, full_html=True, default_width="100%",
                   default_height=f"{height}px", div_id="embedder-plot")
    page = tmp.read_text(encoding="utf-8").replace("<body>", f'<body style="max-width: {width}px">', 1)
    tmp.write_text(page, encoding="utf-8")


def _corpus_name(fpath: Path) -> str:
    mf = (fpath if fpath.is_dir() else fpath.parent) / "embed.json"
    try:
        corpus = json.loads(mf.read_text(encoding="utf-8")).get("corpus") or []
        names = [Path(c).name for c in corpus]
        if names:
            return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
    except (OSError, ValueError, AttributeError):
        pass
    return fpath.parent.name
