"""embedder: sequence-aware utterance vectors, trained on your own question/answer corpus.

    import embedder
    model = embedder.train(["corpus.txt"], out="model/")   # or embedder.load("model/")
    X = model.encode(["How do I reset it?"], encoder="seq2seq")   # float32, unit rows
"""

__version__ = "0.1.0"

from .errors import EmbedderError  # noqa: E402
from .model import Model, load  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["EmbedderError", "Model", "load", "train", "__version__"]
