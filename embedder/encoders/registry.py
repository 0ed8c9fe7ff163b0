"""Every encoder kind by name. Adding an encoder is one module and one entry here; an import
error in an encoder module surfaces as itself, never as "unknown encoder"."""

from __future__ import annotations

from ..errors import EmbedderError
from .base import Encoder
from .birnn import BiRNNEncoder
from .seq2seq import Seq2Seq

ENCODERS: dict[str, type[Encoder]] = {cls.kind: cls for cls in (Seq2Seq, BiRNNEncoder)}
DEFAULT_ENCODERS = tuple(ENCODERS)


def encoder_class(kind: str, where: str = "") -> type[Encoder]:
    if kind not in ENCODERS:
        raise EmbedderError(f"{where + ': ' if where else ''}unknown encoder {kind!r}; "
                            f"this embedder has {', '.join(ENCODERS)}")
    return ENCODERS[kind]
