"""`--set ENCODER.FIELD=VALUE` for the quality benchmarks: train with one config field changed.

Each lever tried on the encoders is first measured this way, against the same run without it,
before it becomes a default in `configure`; the value is JSON (`true`, `0.5`, `"lstm"`).
"""

from __future__ import annotations

import dataclasses
import json


def override(change: str) -> None:
    """`encoder.field=value`: every config that encoder's `configure` makes gets that field so."""
    from embedder.encoders.registry import ENCODERS

    target, value = change.split("=", 1)
    name, field = target.rsplit(".", 1)
    cls = ENCODERS[name]
    if field not in {f.name for f in dataclasses.fields(cls.config_class)}:
        raise SystemExit(f"--set {change}: {name} has no config field {field!r}")
    configure = cls.configure.__func__
    parsed = json.loads(value)

    def changed(klass, vocab_size, options):
        return dataclasses.replace(configure(klass, vocab_size, options), **{field: parsed})
    cls.configure = classmethod(changed)
