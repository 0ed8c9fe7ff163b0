"""The SentencePiece model both encoders share, whether trained on the corpus or built from
pieces chosen elsewhere (a teacher's vocabulary)."""

import numpy as np

from embedder.data.tokenizer import BOS, EOS, PAD, UNK, WORD_MARK, Tokenizer

TEXTS = ["Where is the station?", "The station is by the river.", "Rivers flow; stations don't."]


def test_built_from_given_pieces_it_splits_with_them_and_spells_out_the_rest(tmp_path):
    pieces = {f"{WORD_MARK}the": -1.0, f"{WORD_MARK}station": -2.0, "s": -3.0, f"{WORD_MARK}river": -3.0,
              f"{WORD_MARK}is": -4.0, "?": -4.0, ".": -4.0}
    tok = Tokenizer.from_pieces(TEXTS, pieces)
    assert [tok.sp.id_to_piece(i) for i in (PAD, UNK, BOS, EOS)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tok.pieces()[4:4 + len(pieces)] == list(pieces)  # given order: the likeliest first
    assert tok.sp.encode("The stations", out_type=str) == [f"{WORD_MARK}the", f"{WORD_MARK}station", "s"]
    # a word no given piece covers is spelled from the corpus's characters, never <unk>
    assert tok.sp.encode("where", out_type=str) == [WORD_MARK, *"where"]
    assert UNK not in np.concatenate(tok.encode(TEXTS))
    tok.save(tmp_path / "t.model")
    again = Tokenizer.load(tmp_path / "t.model")
    assert [a.tolist() for a in again.encode(TEXTS)] == [a.tolist() for a in tok.encode(TEXTS)]
    assert again.decode(again.encode(["the river is by the station."])[0]) == "the river is by the station."
