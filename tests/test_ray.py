"""`embed encode --engine ray` against in-process encoding, on a local Ray cluster started here."""

import subprocess
import sys

import numpy as np
import pytest

import embedder
from conftest import EXAMPLE, ROOT
from embedder.features import load_features
from embedder.storage import manifest as manifests
from embedder.storage.collection import Collection
from embedder.storage.encode import encode_corpus

QUERIES = ["can i fish in the river?", "how do i open an account?", "the shop closes at noon."]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The example corpus's first dialogues (~100 utterances, no two alike)."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()[:150]
    while lines[-1].strip():
        lines.pop()
    path = tmp_path_factory.mktemp("ray_corpus") / "qa.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(corpus, tmp_path_factory):
    """A tiny model: both encoders, dim 32, one epoch."""
    return embedder.train([corpus], out=tmp_path_factory.mktemp("ray_model"), dim=32, epochs=1, seed=0,
                          device="cpu")


@pytest.fixture(scope="module")
def encoded(corpus, model, tmp_path_factory):
    """(in-process output, Ray output), each in shards of 32 utterances."""
    import ray  # the test extra installs it

    root = tmp_path_factory.mktemp("ray_out")
    encode_corpus([corpus], root / "local", model=model, device="cpu", shard_rows=32)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        encode_corpus([corpus], root / "ray", model=model, device="cpu", shard_rows=32, engine="ray")
    finally:
        ray.shutdown()
    return root / "local", root / "ray"


def test_ray_gives_the_same_output_as_in_process(model, encoded):
    local, on_ray = encoded
    m_local, m_ray = manifests.read(local), manifests.read(on_ray)
    assert len(m_ray["shards"]) == len(m_local["shards"]) > 1
    assert m_ray["rows"] == m_local["rows"]
    X1, meta1 = load_features(local)
    X2, meta2 = load_features(on_ray)
    cols = ["id", "dialogue", "position", "role", "text"]
    assert meta2[cols].equals(meta1[cols]) and meta2["id"].tolist() == list(range(len(meta1)))
    np.testing.assert_allclose(X2, X1, atol=1e-5)
    for col in ("seq2seq_order", "skipgram_birnn_order"):
        np.testing.assert_allclose(meta2[col].to_numpy(), meta1[col].to_numpy(), atol=1e-5)
    for out in (local, on_ray):
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in local.iterdir())
    for encoder in model.encoders:
        top_local = Collection(local, model=model).query(QUERIES, k=1, encoder=encoder)
        top_ray = Collection(on_ray, model=model).query(QUERIES, k=1, encoder=encoder)
        assert [h[0].id for h in top_ray] == [h[0].id for h in top_local]


def test_without_ray_installed_the_flag_says_what_to_install(corpus, model, tmp_path):
    """One line on stderr, no traceback, nothing left behind (simulated: `import ray` fails)."""
    code = ("import sys; sys.modules['ray'] = None; from cli.main import main; "
            f"sys.argv = ['embed', 'encode', {str(corpus)!r}, '--model', {str(model.path)!r}, "
            f"'-o', {str(tmp_path / 'out')!r}, '--engine', 'ray', '--quiet']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    assert 'pip install -e ".[ray]"' in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
