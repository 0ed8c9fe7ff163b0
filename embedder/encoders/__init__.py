"""The encoders: one protocol (`base.Encoder`), seq2seq and skip-gram + BiRNN on it, the RNN,
pooling and word-order pieces they share, and `Model` (tokenizer + encoders in a folder)."""
