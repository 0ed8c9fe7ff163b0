"""The ONNX runtime beside torch, on the CPU, in one run: encoding rate and installed size.

    python benchmarks/onnx_runtime.py --json /tmp/onnx.json
    python benchmarks/onnx_runtime.py --model examples/qa_corpus.embed/model --texts 10000

Rate: `Model.encode` (torch) and `embedder.onnx.OnnxModel.encode` (onnxruntime) on the same
texts (STS 2015 sentences from ../shared/data, else the bundled corpus's lines joined in ones,
twos and threes), both encoders, batch 256, both runtimes given the same threads, alternated for
`--rounds` rounds; each one's best round is kept (the machine is shared and noisy), and the ratio
is what to read. Size: the installed files of what each runtime needs to encode (its package and
everything it requires, transitively, from this environment's package metadata).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STS = REPO.parent / "shared" / "data" / "sts" / "2015.test.tsv"
EXAMPLE = REPO / "examples" / "qa_corpus.txt"
# what each runtime needs to encode a text (their own requirements follow from package metadata)
NEEDS = {"torch": ["torch", "numpy", "sentencepiece", "safetensors"],
         "onnx": ["onnxruntime", "numpy", "sentencepiece"]}


def texts(n: int) -> list[str]:
    if STS.exists():
        out = [t for line in STS.read_text(encoding="utf-8").splitlines() for t in line.split("\t")[1:3] if t.strip()]
    else:
        lines = [line[3:] for line in EXAMPLE.read_text().splitlines() if line.strip()]
        out = [" ".join(lines[i:i + k]) for k in (1, 2, 3) for i in range(len(lines))]
    return (out * (n // max(len(out), 1) + 1))[:n]


def _requires(dist: metadata.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        names.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    return names


def installed_mb(roots: list[str]) -> tuple[float, list[str]]:
    """MB of the installed files of `roots` and everything they require (transitively)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        todo += _requires(dist)
    total = 0
    for dist in seen.values():
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_file():
                total += p.stat().st_size
    return total / 2**20, sorted(seen)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a model folder (default: train one on the bundled corpus)")
    ap.add_argument("--texts", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    import embedder
    from embedder.encoders.onnx_export import export_onnx
    from embedder.onnx import OnnxModel

    torch.set_num_threads(args.threads)
    sample = texts(args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            model_dir = Path(tmp) / "model"
            embedder.train(EXAMPLE, model_dir, device="cpu", seed=0)
        model = embedder.load(model_dir, device="cpu")
        export_onnx(model, Path(tmp) / "onnx")
        runtimes = {"torch": model, "onnx": OnnxModel(Path(tmp) / "onnx", threads=args.threads)}
        rates: dict[str, dict[str, float]] = {}
        diffs = {}
        for name in model.encoders:
            outputs = {}
            for _ in range(args.rounds):
                for runtime, m in runtimes.items():
                    t0 = time.perf_counter()
                    outputs[runtime] = m.encode(sample, encoder=name, batch_size=256)
                    rate = len(sample) / (time.perf_counter() - t0)
                    rates.setdefault(name, {})[runtime] = max(rate, rates.get(name, {}).get(runtime, 0.0))
            diffs[name] = float(np.abs(outputs["torch"] - outputs["onnx"]).max())
    sizes = {runtime: installed_mb(roots) for runtime, roots in NEEDS.items()}
    result = {
        "texts": len(sample), "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
        "onnxruntime": metadata.version("onnxruntime"),
        "sentences_per_second": {k: {r: round(v) for r, v in d.items()} for k, d in rates.items()},
        "onnx_vs_torch": {k: round(d["onnx"] / d["torch"], 2) for k, d in rates.items()},
        "max_abs_diff": diffs,
        "installed_mb": {r: round(mb, 1) for r, (mb, _) in sizes.items()},
        "installed_packages": {r: names for r, (_, names) in sizes.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
