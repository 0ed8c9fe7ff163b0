"""RecordIO-protobuf speed: embedder.recordio against SageMaker's own code, same records.

    python benchmarks/recordio.py                       # the recorded run
    python benchmarks/recordio.py --pairs 20000 --vectors 5000   # a quick look

Two workloads, both synthetic (seeded) so the run needs no data files:
- seq2seq pairs: `--pairs` (source, target) token-id pairs, lengths 5..40, ids < 8000, written
  with `write_pairs` and read back with `read_pairs` (int32 arrays, vocabulary-checked).
- dense vectors: `--vectors` rows of `--dim` float32 with int64 ids, `write_dense_vectors` and
  `read_dense_vectors` (the layout SageMaker k-NN / Linear Learner train on).

The peer is AWS's `sagemaker-training` toolkit (`record_pb2` + `recordio`), when installed:
its pairs loop is SageMaker seq2seq's `create_vocab_proto.py` layout written through its
`_write_recordio`, its vectors go through `_write_numpy_to_dense_tensor`; reading parses each
payload from `_read_recordio` into its `Record` and pulls the values into numpy arrays, which
is what a user of it has to do. Throughput is records per second of wall time (best of
`--runs`), files on local disk, page cache warm.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedder.data import recordio  # noqa: E402


def make_pairs(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 41, size=(n, 2))
    return [(rng.integers(4, 8000, a).astype(np.int32), rng.integers(4, 8000, b).astype(np.int32))
            for a, b in lengths]


def best_rate(count: int, runs: int, work: Callable[[], object]) -> float:
    """Records per second of the fastest of `runs` calls."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return count / best


def ours(pairs, ids, vectors, folder: Path, runs: int) -> dict[str, float]:
    pairs_path, vectors_path = folder / "ours_pairs.rec", folder / "ours_vectors.rec"
    return {
        "pairs write": best_rate(len(pairs), runs, lambda: recordio.write_pairs(pairs_path, pairs, 8000)),
        "pairs read": best_rate(len(pairs), runs, lambda: sum(1 for _ in recordio.read_pairs(pairs_path, 8000))),
        "vectors write": best_rate(len(ids), runs, lambda: recordio.write_dense_vectors(vectors_path, ids, vectors)),
        "vectors read": best_rate(len(ids), runs, lambda: recordio.read_dense_vectors(vectors_path)),
    }


def sagemaker(pairs, ids, vectors, folder: Path, runs: int) -> dict[str, float] | None:
    try:
        from sagemaker_training import recordio as sm
        from sagemaker_training.record_pb2 import Record
    except ImportError:
        print("peer skipped: pip install 'sagemaker-training>=5.1' to compare with SageMaker's code")
        return None
    pairs_path, vectors_path = folder / "sm_pairs.rec", folder / "sm_vectors.rec"

    def write_pairs():
        with open(pairs_path, "wb") as f:
            for source, target in pairs:
                record = Record()
                record.features["source"].int32_tensor.values.extend(source.tolist())
                record.features["target"].int32_tensor.values.extend(target.tolist())
                sm._write_recordio(f, record.SerializeToString())

    def read_pairs():
        with open(pairs_path, "rb") as f:
            for payload in sm._read_recordio(f):
                record = Record()
                record.ParseFromString(payload)
                np.array(record.features["source"].int32_tensor.values, dtype=np.int32)
                np.array(record.features["target"].int32_tensor.values, dtype=np.int32)

    def write_vectors():
        with open(vectors_path, "wb") as f:
            sm._write_numpy_to_dense_tensor(f, vectors, ids.astype(np.float32))

    def read_vectors():
        rows, labels = [], []
        with open(vectors_path, "rb") as f:
            for payload in sm._read_recordio(f):
                record = Record()
                record.ParseFromString(payload)
                rows.append(np.array(record.features["values"].float32_tensor.values, dtype=np.float32))
                labels.append(record.label["values"].float32_tensor.values[0])
        return np.asarray(labels, dtype=np.int64), np.stack(rows)

    return {
        "pairs write": best_rate(len(pairs), runs, write_pairs),
        "pairs read": best_rate(len(pairs), runs, read_pairs),
        "vectors write": best_rate(len(ids), runs, write_vectors),
        "vectors read": best_rate(len(ids), runs, read_vectors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--vectors", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from google.protobuf.internal import api_implementation

    print(f"protobuf backend: {api_implementation.Type()}; {args.pairs} pairs (5-40 tokens each), "
          f"{args.vectors} vectors x {args.dim} float32; best of {args.runs}")
    pairs = make_pairs(args.pairs)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((args.vectors, args.dim)).astype(np.float32)
    ids = np.arange(args.vectors, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {"embedder.recordio": ours(pairs, ids, vectors, folder, args.runs)}
        peer = sagemaker(pairs, ids, vectors, folder, args.runs)
        if peer is not None:
            results["sagemaker-training"] = peer
            same = (folder / "ours_vectors.rec").read_bytes() == (folder / "sm_vectors.rec").read_bytes()
            print(f"dense files byte-identical to SageMaker's: {same}")
    print(f"{'records/s':<20}" + "".join(f"{task:>15}" for task in next(iter(results.values()))))
    for name, rates in results.items():
        print(f"{name:<20}" + "".join(f"{rate:>15,.0f}" for rate in rates.values()))


if __name__ == "__main__":
    main()
