"""A model folder as a sentence-transformers model, so the wrappers built on it work unchanged.

Every model folder `embed train` writes carries a `modules.json` naming `EmbedderModule`, so

    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer("model/", trust_remote_code=True)   # the folder's first encoder
    X = st.encode(["How do I reset it?"])                          # = Model.encode(...)

(sentence-transformers 6 asks `trust_remote_code=True` before it imports a module class from
outside its own package, here embedder's). Another encoder, or a folder written before
`modules.json` existed, opens through the class itself, which needs no flag:

    from embedder.sentence_transformers import EmbedderModule
    st = SentenceTransformer(modules=[EmbedderModule("model/", encoder="skipgram-birnn")])

The module's `tokenize` gives the pieces and lengths `Model` reads, and its `forward` the same
unit vectors; sentence-transformers does the batching, the device, and the rest of `encode`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .encoders.model import ST_CONFIG, load, write_sentence_transformers
from .errors import EmbedderError



class EmbedderModule(nn.Module):
    """One encoder of an embedder model folder as a sentence-transformers module."""

    def __init__(self, model_dir: str | os.PathLike, encoder: str | None = None):
        super().__init__()
        self.model_dir = Path(model_dir)
        self.model = load(self.model_dir, device="cpu")
        self.encoder_name = encoder or next(iter(self.model.encoders))
        self.encoder = self.model.encoder(self.encoder_name)  # a submodule: sentence-transformers moves it

    def tokenize(self, texts: list[str], **kwargs) -> dict[str, torch.Tensor]:
        from .encoders.batching import pad

        ids = self.model.tokens([str(t) for t in texts], self.encoder_name)
        src, lengths = pad(ids)
        return {"input_ids": src, "lengths": lengths}

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.encoder.vectors(features["input_ids"], features["lengths"])
        features["sentence_embedding"] = F.normalize(z.float(), dim=-1)
        return features

    def get_embedding_dimension(self) -> int:
        return int(self.encoder.cfg.dim)

    get_sentence_embedding_dimension = get_embedding_dimension  # its name before sentence-transformers 6

    def save(self, output_path: str, *args, **kwargs) -> None:
        """sentence-transformers' `save`: the model folder is what it is; a copy elsewhere gets the
        model's files and this module's choice of encoder."""
        out = Path(output_path)
        if out.resolve() != self.model_dir.resolve():
            self.model.save(out)
        write_sentence_transformers(out, self.encoder_name)

    @staticmethod
    def load(input_path: str) -> "EmbedderModule":
        path = Path(input_path)
        encoder = None
        if (path / ST_CONFIG).exists():
            try:
                encoder = json.loads((path / ST_CONFIG).read_text(encoding="utf-8")).get("encoder")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                raise EmbedderError(f"{path / ST_CONFIG}: corrupt ({e})") from None
        return EmbedderModule(path, encoder=encoder)
