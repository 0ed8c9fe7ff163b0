"""An `embed encode` output as SageMaker dense-vector records (label = Parquet id): the input
that SageMaker's k-NN and Linear Learner take."""

from __future__ import annotations

import os
from pathlib import Path

from ..data import recordio
from ..errors import EmbedderError
from . import parquet


def export_recordio_vectors(out_dir: str | os.PathLike, dest: str | os.PathLike, encoder: str | None = None) -> int:
    """Streams one row batch at a time, so any collection size fits in memory."""
    features = Path(out_dir) / parquet.FEATURES
    names = list(parquet.metadata(features)["encoders"])
    encoder = encoder or names[0]
    if encoder not in names:
        raise EmbedderError(f"{features}: no vectors for encoder {encoder!r} (it has: {', '.join(names)})")
    return recordio.write_dense_vector_batches(dest, parquet.vector_batches(features, encoder))
