"""Reading data and formats: corpus readers (.txt .tsv .jsonl .parquet .rec), the SentencePiece
tokenizer, training pairs, and the SageMaker RecordIO and word2vec file formats."""
