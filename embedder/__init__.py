"""embedder: sequence-aware utterance vectors, trained on your own question/answer corpus.

    import embedder
    model = embedder.train(["corpus.txt"], out="model/")   # or embedder.load("model/")
    X = model.encode(["How do I reset it?"], encoder="seq2seq")   # float32, unit rows
"""

from .encoders.model import Model, load
from .errors import EmbedderError
from .training.train import train
from .version import __version__

__all__ = ["EmbedderError", "Model", "load", "train", "__version__"]
