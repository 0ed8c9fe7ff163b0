"""An `embed encode` output as SageMaker dense-vector records (label = Parquet id): the input
that SageMaker's k-NN and Linear Learner take."""

from __future__ import annotations

import os

from ..data import recordio
from ..errors import EmbedderError
from . import manifest as manifests, parquet


def export_recordio_vectors(out_dir: str | os.PathLike, dest: str | os.PathLike, encoder: str | None = None) -> int:
    """Streams one row batch at a time, so any collection size fits in memory."""
    shards = manifests.shards(out_dir, manifests.read(out_dir))
    names = list(parquet.metadata(shards[0])["encoders"])
    encoder = encoder or names[0]
    if encoder not in names:
        raise EmbedderError(f"{out_dir}: no vectors for encoder {encoder!r} (it has: {', '.join(names)})")
    batches = (b for shard in shards for b in parquet.vector_batches(shard, encoder))
    return recordio.write_dense_vector_batches(dest, batches)
