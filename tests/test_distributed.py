"""`embed train --nproc N`: DistributedDataParallel on CPU processes (gloo) of this machine.

The default tests keep to two processes, a 60-line corpus, tiny vectors and a few epochs; a
resumed run and the command line end to end are marked slow.
"""

import json
import os
import signal
import time

import numpy as np
import pytest
import torch

import embedder
from conftest import EXAMPLE, run_embed
from embedder.errors import EmbedderError
from embedder.training import distributed
from embedder.training.distributed import launch, shard, state_digest

FAST = {"dim": 16, "batch_size": 4, "seed": 0, "device": "cpu"}
TEXTS = ["Can we fish from the bank of the river here?", "Where do I get the permit?"]


@pytest.fixture
def small_corpus(tmp_path):
    """The bundled example's first dialogues: enough for a few batches on each of two ranks."""
    p = tmp_path / "small.txt"
    p.write_text("\n".join(EXAMPLE.read_text().splitlines()[:60]) + "\n")
    return p


def test_shard_gives_every_rank_as_many_batches_and_misses_none():
    items = list(range(7))
    shares = [shard(items, r, 3) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert sorted(set(sum(shares, []))) == items
    assert shard([0], 1, 2) == [0]  # a rank never goes without a batch to step on
    assert shard([], 0, 2) == []


def test_two_processes_lower_the_loss_and_end_with_the_same_weights(small_corpus, tmp_path):
    seen = {}
    model = embedder.train([small_corpus], out=tmp_path / "m", epochs=3, nproc=2, **FAST,
                           progress=lambda task, fraction: seen.__setitem__(task, fraction))
    assert seen == {"skip-gram": 1.0, "seq2seq": 1.0, "skipgram-birnn": 1.0}  # rank 0's, through the parent
    training = model.manifest["training"]
    ddp = training["distributed"]
    assert ddp["processes"] == 2 and ddp["backend"] == "gloo"
    # each rank's digest of its own weights, gathered before rank 0 wrote the folder
    assert ddp["weights"][0] == ddp["weights"][1] == state_digest(model.encoders)
    for name in ("seq2seq", "skipgram-birnn"):
        loss = training["history"][name]["train_loss"]
        assert len(loss) == 3 and loss[-1] < loss[0], (name, loss)
    assert training["options"]["nproc"] == 2
    assert not (tmp_path / "m" / "checkpoints").exists()
    X = embedder.load(tmp_path / "m").encode(TEXTS, encoder="skipgram-birnn")
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)


def test_nproc_below_one_is_one_line(tiny_corpus, tmp_path):
    with pytest.raises(EmbedderError, match=r"^--nproc 0: must be at least 1$"):
        embedder.train([tiny_corpus], out=tmp_path / "m", nproc=0)
    proc = run_embed("train", tiny_corpus, "-o", tmp_path / "m", "--nproc", "-1", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --nproc -1: must be at least 1"


def test_more_processes_than_gpus_is_one_line_and_more_than_cores_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(EmbedderError, match=r"^--nproc 2: 1 GPU\(s\) here, and NCCL needs one per process; "
                                            r"use --nproc 1 or --device cpu$"):
        distributed.check_nproc(2, torch.device("cuda"))
    monkeypatch.setattr(distributed, "cpu_cores", lambda: 2)
    with pytest.warns(UserWarning, match="more than the 2 CPU cores"):
        distributed.check_nproc(3, torch.device("cpu"))


# -- a failing process: one line, no hang (the workers run in the spawned processes, so they live here) --
def _reports_progress(rank, world, progress=None):
    if progress is not None:
        progress("work", 1.0)
    torch.distributed.barrier()
    return {"rank": rank, "world": world}


def _user_error_on_rank_1(rank, world, progress=None):
    if rank == 1:
        raise EmbedderError("shard 1: a bad record")
    torch.distributed.barrier()  # rank 0 waits for a partner that has gone


def _killed_on_rank_1(rank, world, progress=None):
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    torch.distributed.barrier()


def _bug_on_rank_0(rank, world, progress=None):
    if rank == 0:
        raise ZeroDivisionError("division by zero\nsecond line")
    torch.distributed.barrier()


@pytest.mark.slow
def test_launch_returns_each_rank_result_and_forwards_progress():
    seen = []
    results = launch(_reports_progress, 2, (), torch.device("cpu"), lambda task, f: seen.append((task, f)))
    assert results == [{"rank": 0, "world": 2}, {"rank": 1, "world": 2}]
    assert seen == [("work", 1.0)]


@pytest.mark.parametrize("worker, message", [
    (_user_error_on_rank_1, r"^shard 1: a bad record$"),
    (_killed_on_rank_1, r"^training process 1 was killed by SIGKILL$"),
    pytest.param(_bug_on_rank_0, r"^training process 0 failed: ZeroDivisionError: division by zero$",
                 marks=pytest.mark.slow),
])
def test_a_failed_process_is_one_line_and_stops_the_others(worker, message):
    t0 = time.perf_counter()
    with pytest.raises(EmbedderError, match=message):
        launch(worker, 2, (), torch.device("cpu"))
    assert time.perf_counter() - t0 < 60


# -- slow: resume, and the command line end to end --------------------------------------------------------
@pytest.mark.slow
def test_resume_with_two_processes_matches_an_uninterrupted_run(small_corpus, tmp_path):
    opts = dict(encoders=["seq2seq"], epochs=4, nproc=2, **FAST)
    straight = embedder.train([small_corpus], out=tmp_path / "s", **opts)

    class Stop(Exception):
        pass

    def stop_halfway(task, fraction):
        if fraction >= 0.5:
            raise Stop

    with pytest.raises(Stop):
        embedder.train([small_corpus], out=tmp_path / "r", progress=stop_halfway, **opts)
    assert (tmp_path / "r" / "checkpoints" / "seq2seq.last.pt").exists()
    assert not (tmp_path / "r" / "manifest.json").exists()
    with pytest.raises(EmbedderError, match="different settings \\(nproc\\)"):
        embedder.train([small_corpus], out=tmp_path / "r", resume=True, **{**opts, "nproc": 1})
    resumed = embedder.train([small_corpus], out=tmp_path / "r", resume=True, **opts)
    assert resumed.manifest["training"]["history"]["seq2seq"]["epochs"] == 4
    assert state_digest(resumed.encoders) == state_digest(straight.encoders)


@pytest.mark.slow
def test_embed_train_nproc_on_the_command_line(small_corpus, tmp_path):
    proc = run_embed("train", small_corpus, "-o", tmp_path / "m", "--nproc", "2", "--epochs", "2", "--dim", "16",
                     "--batch-size", "4", "--device", "cpu", "--json")
    summary = json.loads(proc.stdout)
    assert set(summary["training"]) >= {"seq2seq", "skipgram-birnn"}
    assert proc.stderr.strip() == ""
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["training"]["distributed"]["processes"] == 2
