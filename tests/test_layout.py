"""The code's shape: imports follow the data flow (corpus → tokens → encoders → training →
vectors in Parquet + FAISS → evaluation → command line), never back up and never in a circle.

The graph is read from the source with `ast`, so the test sees every import, including those
inside functions, without running any of them.
"""

import ast
from pathlib import Path

from conftest import ROOT

# The stage of each module prefix, in the order the data flows; a module may import its own stage
# or an earlier one. Top-level modules not listed are the foundation every stage uses.
STAGES = [
    ("embedder.data", 1),
    ("embedder.encoders", 2),
    ("embedder.onnx", 2),           # the encoders as ONNX graphs, run without torch (their export imports it)
    ("embedder.training", 3),
    ("embedder.storage", 4),
    ("embedder.features", 4),       # the public reader of what storage writes
    ("embedder.evaluation", 5),
    ("embedder.sklearn", 5),
    ("embedder.sentence_transformers", 5),  # a model folder as a sentence-transformers module
    ("embedder.service", 6),        # the HTTP service, over storage and the encoders
    ("embedder", 7),                # the package itself: the public API, imported by no stage
    ("cli", 8),
]
FOUNDATION = {"embedder.errors", "embedder.atomic", "embedder.device", "embedder.memory", "embedder.progress",
              "embedder.version"}


def _modules() -> dict[str, Path]:
    mods = {}
    for package in ("embedder", "cli"):
        for f in (ROOT / package).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def _graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports (a package's `__init__` stands for the package)."""
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not m.startswith(t + "."):  # importing a parent package runs it anyway
                    graph[m].add(t)
    return graph


def _stage(module: str) -> int:
    if module in FOUNDATION:
        return 0
    for prefix, stage in STAGES:
        if module == prefix or module.startswith(prefix + "."):
            return stage
    raise AssertionError(f"{module}: not in any stage; add it to STAGES or FOUNDATION")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, done = [], set()

    def visit(m, path):
        for n in sorted(graph.get(m, ())):
            if n in path:
                cycles.append(path[path.index(n):] + [n])
            elif n not in done:
                visit(n, path + [n])
        done.add(m)

    for m in sorted(graph):
        if m not in done:
            visit(m, [m])
    return cycles


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (stage {_stage(m)}) imports {n} (stage {_stage(n)})"
            for m, targets in sorted(graph.items()) for n in sorted(targets) if _stage(n) > _stage(m)]


def test_no_import_cycles():
    cycles = _cycles(_graph(_modules()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_stages():
    upward = _upward(_graph(_modules()))
    assert not upward, "\n".join(upward)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    """Both checks on a graph with the two faults the layout forbids, and the graph sees real imports."""
    bad = {"embedder.data.corpus": {"embedder.data.sagemaker", "embedder.training.loop"},
           "embedder.data.sagemaker": {"embedder.data.corpus"}, "embedder.training.loop": set()}
    assert _cycles(bad) == [["embedder.data.corpus", "embedder.data.sagemaker", "embedder.data.corpus"]]
    assert _upward(bad) == ["embedder.data.corpus (stage 1) imports embedder.training.loop (stage 3)"]
    real = _graph(_modules())
    assert {"embedder.data.corpus", "embedder.encoders.base"} <= real["embedder.training.loop"]


def test_every_folder_says_what_lives_there():
    for init in (ROOT / "embedder").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) <= 2, f"{init}: needs a docstring of one or two lines"
