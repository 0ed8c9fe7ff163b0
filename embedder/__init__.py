"""embedder: sequence-aware utterance vectors, trained on your own question/answer corpus.

    import embedder
    model = embedder.train(["corpus.txt"], out="model/")   # or embedder.load("model/")
    X = model.encode(["How do I reset it?"], encoder="seq2seq")   # float32, unit rows

`Model`, `load` and `train` are imported on first use: they bring torch, which takes about two
seconds to import, and the command line must answer `--help` or a bad argument without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EmbedderError
from .version import __version__

if TYPE_CHECKING:
    from .encoders.model import Model, load
    from .training.train import train

__all__ = ["EmbedderError", "Model", "load", "train", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Model", "load"):
        from .encoders import model

        return getattr(model, name)
    if name == "train":
        from .training.train import train

        return train
    raise AttributeError(f"module 'embedder' has no attribute {name!r}")
