"""The folder an `embed encode` run writes into before its output is complete.

A run writes into `.NAME.partial/` beside the output folder, holding a lock on it so two runs
cannot write one output. Each finished shard is recorded in the folder's progress file, so a
killed run can be continued (`--resume`) after its last finished shard. Only when everything is
written is the folder swapped into place, so readers see the previous output or the new one,
never half of one. Temporaries that killed runs of older versions left beside the output
(`.NAME.*.tmp`, `.NAME.*.old`) are swept when a run starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from ..atomic import atomic_path, replace_dir
from ..errors import EmbedderError

PROGRESS = "progress.json"


def partial_path(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial"


def read_progress(folder: Path) -> dict | None:
    """What an interrupted run finished (None when there is nothing to continue)."""
    path = folder / PROGRESS
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmbedderError(f"{path}: corrupt ({e}); run without --resume to start over") from None
    return state if isinstance(state, dict) else None


def write_progress(folder: Path, state: dict) -> None:
    """Record finished shards: fsynced, then renamed, so a kill leaves the old record or the new."""
    with atomic_path(folder / PROGRESS) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(state, indent=1))
            f.flush()
            os.fsync(f.fileno())


def sweep(out_dir: Path) -> None:
    """Remove what killed runs left beside the output (only while holding the partial's lock)."""
    for p in out_dir.parent.glob(f".{out_dir.name}.*"):
        if p.suffix in (".tmp", ".old"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def partial_folder(out_dir: Path, resume: bool) -> Iterator[Path]:
    """Yield the locked partial folder (emptied unless resuming); on success swap it into place.
    An interrupted run (killed, Ctrl-C, a crash) leaves it for `--resume`; an EmbedderError
    (bad input, bad options) in a fresh run removes it, since running again would meet the same
    error; one in a resumed run leaves it, so a refused resume loses nothing."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    folder = partial_path(out_dir)
    folder.mkdir(exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmbedderError(f"{out_dir}: another `embed encode` is writing this output right now") from None
        sweep(out_dir)
        if not resume:
            for child in folder.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        try:
            yield folder
        except EmbedderError:  # bad input or options: continuing would meet it again; but a refused
            if not resume:     # --resume keeps what the interrupted run finished
                shutil.rmtree(folder, ignore_errors=True)
            raise
        (folder / PROGRESS).unlink(missing_ok=True)
        replace_dir(folder, out_dir)
    finally:
        os.close(fd)

