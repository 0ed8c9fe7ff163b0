"""Storage: vectors written to `features.parquet` and FAISS indexes (`embed encode`), queried back
(`Collection`), and exported as SageMaker dense-vector records."""
