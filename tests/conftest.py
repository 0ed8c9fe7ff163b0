import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests of code that lives with the benchmarks (benchmarks/skipgram.py)
EXAMPLE = ROOT / "examples" / "qa_corpus.txt"
SHARED_DATA = ROOT.parent / "shared" / "data"
# Order scores computed in different batch shapes or threads: the scorer's first layer runs in
# bfloat16 on CPUs that have it, and the kernel may sum in another order (6e-5 seen on one Xeon).
# Vectors stay float32 and are compared at 1e-5 or tighter.
ORDER_ATOL = 1e-3

TINY = """Q: how do i charge my phone?
A: plug the cable into the wall socket.

Q: where is the river bank?
A: walk down the hill past the old mill.

Q: can i get a bank loan?
A: yes, fill in the form at the counter.
"""


def run_embed(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real command line, in a child process, as a user would run it."""
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"embed {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.txt"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="session")
def example_out(tmp_path_factory) -> Path:
    """`embed encode` on the bundled example corpus, once per test session."""
    out = tmp_path_factory.mktemp("example") / "qa.embed"
    run_embed("encode", EXAMPLE, "-o", out, "--quiet", "--seed", "0")
    return out


def swap_adjacent_words(text: str, rng: np.random.Generator) -> str | None:
    """`text` with one random pair of adjacent, different words swapped; None when there is none."""
    from embedder.evaluation.probes import adjacent_swaps

    copies = adjacent_swaps(text)
    return copies[int(rng.integers(len(copies)))] if copies else None
