"""A scikit-learn transformer: raw text in, embedder vectors out.

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    from embedder.sklearn import EmbeddingTransformer

    clf = make_pipeline(EmbeddingTransformer("model/", encoder="seq2seq"), LogisticRegression())
    clf.fit(texts, labels)

The model is trained once by `embed train`; `fit` learns nothing (it only loads the model), so
the transformer is safe inside cross-validation. It pickles without the torch model, which is
reloaded from `model_dir` on first use; that is what lets `n_jobs>1` send it to worker processes.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .errors import EmbedderError
from .storage.parquet import vector_column


class EmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Texts → unit-length float32 vectors from one encoder of a trained embedder model.

    Parameters
    ----------
    model_dir : path of a model folder (`embed train -o MODEL_DIR`, or OUT/model of `embed encode`)
    encoder : "seq2seq" or "skipgram-birnn"
    batch_size : texts per forward pass at most (None: the device's choice, `device.Numerics`)
    device : "auto" (CUDA when there is a GPU), "cpu" or "cuda"
    """

    def __init__(self, model_dir: str, encoder: str = "seq2seq", batch_size: int | None = None,
                 device: str = "auto"):
        self.model_dir = model_dir
        self.encoder = encoder
        self.batch_size = batch_size
        self.device = device

    # -- the model, loaded lazily -------------------------------------------------------------
    def _model(self):
        key = (str(self.model_dir), self.encoder, str(self.device))
        if getattr(self, "_loaded", None) is None or self._loaded_key != key:
            from .encoders.model import load

            model = load(self.model_dir, device=self.device)
            model.encoder(self.encoder)  # an unknown encoder fails here, naming the ones there are
            self._loaded, self._loaded_key = model, key
        return self._loaded

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_loaded", None)  # never pickle the torch model: workers reload it from disk
        state.pop("_loaded_key", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = False
        return tags

    # -- the scikit-learn API -----------------------------------------------------------------
    @staticmethod
    def _texts(X) -> list[str]:
        if isinstance(X, str):
            raise EmbedderError("EmbeddingTransformer: expected a sequence of texts, got one string "
                                "(wrap it in a list)")
        if hasattr(X, "columns") and hasattr(X, "iloc"):  # a DataFrame: accept exactly one column
            if X.shape[1] != 1:
                raise EmbedderError(f"EmbeddingTransformer: expected one text column, got a DataFrame "
                                    f"with {X.shape[1]} columns (select one: df['text'])")
            X = X.iloc[:, 0]
        arr = np.asarray(X, dtype=object)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise EmbedderError(f"EmbeddingTransformer: expected a 1-D sequence of texts, got shape {arr.shape}")
        texts = []
        for i, t in enumerate(arr):
            if not isinstance(t, str):
                raise EmbedderError(f"EmbeddingTransformer: item {i} is {type(t).__name__} "
                                    f"({t!r:.40}), not a string")
            texts.append(t)
        return texts

    def fit(self, X=None, y=None):
        """Nothing to learn: checks the input, loads the model and records the output width."""
        if X is not None:
            self._texts(X)
        self.n_features_out_ = self._model().dim(self.encoder)
        return self

    def transform(self, X) -> np.ndarray:
        texts = self._texts(X)
        model = self._model()
        if not texts:
            return np.zeros((0, model.dim(self.encoder)), dtype=np.float32)
        return model.encode(texts, encoder=self.encoder, batch_size=None if self.batch_size is None else int(self.batch_size))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        dim = getattr(self, "n_features_out_", None) or self._model().dim(self.encoder)
        prefix = vector_column(self.encoder)
        return np.asarray([f"{prefix}_{i}" for i in range(dim)], dtype=object)
