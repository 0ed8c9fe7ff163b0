"""SentencePiece, trained on the user's corpus (or built from a teacher's vocabulary), shared by
both encoders.

Sub-word pieces mean no word is ever out of vocabulary, and one vocabulary for both encoders
means one set of token ids in every file we read or write. Ids follow SageMaker seq2seq's
convention so that RecordIO files line up: <pad>=0, <unk>=1, <s>=2, </s>=3.
"""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import sentencepiece as spm

from ..errors import EmbedderError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
WORD_MARK = "\u2581"  # SentencePiece marks the first piece of each word with it

#: Upper bound on the vocabulary: larger buys little on a corpus of a user's size and costs
#: softmax time in the seq2seq decoder.
VOCAB_CAP = 8000
MIN_VOCAB = 64


def vocab_size_for(texts: Sequence[str], cap: int = VOCAB_CAP) -> int:
    """Scale the vocabulary with the corpus: about half its distinct words, within bounds."""
    distinct = len({w for t in texts for w in t.lower().split()})
    return int(min(cap, max(MIN_VOCAB, distinct // 2)))


class Tokenizer:
    def __init__(self, model_proto: bytes):
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor()
        self.sp.LoadFromSerializedProto(model_proto)
        ids = [self.sp.piece_to_id(p) for p in SPECIALS]
        if ids != [PAD, UNK, BOS, EOS]:
            raise EmbedderError(f"tokenizer: special pieces have ids {ids}, expected 0-3")

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int | None = None, seed: int = 0) -> "Tokenizer":
        if not texts:
            raise EmbedderError("tokenizer: no text to train on")
        size = vocab_size or vocab_size_for(texts)
        out = io.BytesIO()
        spm.set_random_generator_seed(seed)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=out, vocab_size=size,
            model_type="unigram", hard_vocab_limit=False, character_coverage=0.9999,
            normalization_rule_name="nmt_nfkc_cf",  # case-folded: a small corpus can't spare data for case
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            pad_piece=SPECIALS[0], unk_piece=SPECIALS[1], bos_piece=SPECIALS[2], eos_piece=SPECIALS[3],
            input_sentence_size=2_000_000, shuffle_input_sentence=True, max_sentence_length=1 << 16,
            num_threads=os.cpu_count() or 1, minloglevel=2,
        )
        return cls(out.getvalue())

    @classmethod
    def from_pieces(cls, texts: Sequence[str], pieces: Mapping[str, float], seed: int = 0) -> Tokenizer:
        """A unigram model over pieces chosen elsewhere (a teacher's own vocabulary), given in
        SentencePiece's notation (WORD_MARK before a word's first piece) with their log
        probabilities. SentencePiece still normalises and splits (the likeliest split under
        those scores), so the file, the ids and every reader stay as they are. The corpus's own
        characters are kept below every given piece, so nothing it holds becomes <unk>."""
        # protobuf: only this path needs it
        from sentencepiece import sentencepiece_model_pb2 as pb

        base = pb.ModelProto()
        distinct = len(set(itertools.chain.from_iterable(texts)))  # SentencePiece needs room for every character
        base.ParseFromString(cls.train(texts, vocab_size=max(MIN_VOCAB, distinct + len(SPECIALS) + 1),
                                       seed=seed).proto)
        out = pb.ModelProto()
        out.CopyFrom(base)  # the normaliser and the special pieces, as `train` sets them
        del out.pieces[len(SPECIALS):]
        seen = set(SPECIALS)
        floor = min(pieces.values(), default=0.0) - 1.0
        chars = {p.piece: floor - k / 1000 for k, p in enumerate(base.pieces[len(SPECIALS):]) if len(p.piece) == 1}
        for piece, score in [*sorted(pieces.items(), key=lambda kv: -kv[1]), *chars.items()]:
            if piece and piece not in seen:
                seen.add(piece)
                out.pieces.add(piece=piece, score=float(score), type=pb.ModelProto.SentencePiece.NORMAL)
        out.trainer_spec.vocab_size = len(out.pieces)
        return cls(out.SerializeToString())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        try:
            return cls(Path(path).read_bytes())
        except (OSError, RuntimeError) as e:
            raise EmbedderError(f"{path}: cannot load the SentencePiece model ({e})") from None

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_bytes(self.proto)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: Iterable[str], max_len: int | None = None) -> list[np.ndarray]:
        """Token ids per text, no <s>/</s>; truncated to `max_len` pieces.

        SentencePiece cuts the texts on all cores, without the GIL; what is left is turning its
        lists of ints into arrays, on one thread. One flat array read from all the lists, then a
        view per text, costs a third of slicing each list and converting it on its own (0.9 vs
        2.4 µs a text), which is a third of all tokenizing (`benchmarks/RESULTS.md`, "GPU")."""
        ids = self.sp.encode(list(texts))
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lens.sum()))
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).tolist()
        keep = (np.minimum(lens, max_len) if max_len else lens).tolist()
        return [flat[s:s + k] for s, k in zip(starts, keep)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) > EOS])

    def pieces(self) -> list[str]:
        return [self.sp.id_to_piece(i) for i in range(len(self))]

    def word_starts(self) -> np.ndarray:
        """(vocab,) bool: which piece ids begin a word, so code can move whole words."""
        return word_starts(self.pieces())


def word_starts(pieces: Sequence[str]) -> np.ndarray:
    return np.array([p.startswith(WORD_MARK) for p in pieces], dtype=bool)
