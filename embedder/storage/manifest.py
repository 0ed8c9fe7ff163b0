"""`embed.json`, the output folder's manifest: what wrote it, each encoder's columns and index, and
the Parquet shards that hold the rows.

The manifest is the folder's commit point. Files appear beside it first; a change becomes visible
only when the manifest that names them is renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_path
from ..errors import EmbedderError
from .parquet import FEATURES

MANIFEST = "embed.json"


def read(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir)
    mf = path / MANIFEST
    if not path.is_dir():
        raise EmbedderError(f"{path}: no such output folder (run `embed encode` first)")
    if not mf.exists():
        raise EmbedderError(f"{path}: not an `embed encode` output folder (no {MANIFEST})")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmbedderError(f"{mf}: corrupt ({e})") from None
    if not isinstance(manifest, dict):
        raise EmbedderError(f"{mf}: corrupt (not a JSON object)")
    return manifest


def write(out_dir: str | os.PathLike, manifest: dict) -> None:
    """Replace the manifest in one rename, fsynced first, so a crash leaves the old one or the new."""
    with atomic_path(Path(out_dir) / MANIFEST) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2))
            f.flush()
            os.fsync(f.fileno())


def shards(out_dir: str | os.PathLike, manifest: dict) -> list[Path]:
    """The Parquet files holding the folder's rows, in id order (older folders: features.parquet)."""
    return [Path(out_dir) / s for s in manifest.get("shards", [FEATURES])]
