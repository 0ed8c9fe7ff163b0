"""What `benchmarks/gpu.py` needs on a GPU machine that has no network, made here.

    python benchmarks/gpu_prepare.py            # writes .gpu_data, .teacher-fp16 and .whl, prints the command

The GPU machine's image has torch, sentence-transformers, pyarrow and the like, but not faiss-cpu
(for `embed encode`) nor the serve extra's packages; the teacher's wheel is larger than what may
travel with the working tree. So this writes, in the repository's root, three folders that
`.git/info/exclude` keeps out of git, and prints the command that runs the check there:

- `.gpu_data`: the ~30k-line corpus of `benchmarks/train_time.py`, from ../shared/data;
- `.teacher-fp16`: all-MiniLM-L6-v2's folder with its weights in float16 (45 MB instead of 90);
  good for timing and for training, whose teacher targets are float32 anyway;
- `.whl`: wheels of what the image lacks, for CPython 3.12 on x86-64 Linux, installed there
  with `--no-deps` into /tmp/site.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FOLDERS = (".gpu_data", ".teacher-fp16", ".whl", ".whl-faiss")
# what the GPU image lacks (its README); faiss apart: with the teacher it is over the 64 MiB carry
WHEELS = ["fastapi", "starlette", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "uvicorn", "h11", "httptools", "uvloop", "prometheus-client", "orjson", "httpx", "httpcore", "anyio",
          "sniffio", "idna", "certifi", "typing-extensions", "sentencepiece", "typer", "click", "rich",
          "markdown-it-py", "mdurl", "pygments", "shellingham", "annotated-doc",
          "opentelemetry-api"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def exclude() -> None:
    path = REPO / ".git" / "info" / "exclude"
    path.parent.mkdir(parents=True, exist_ok=True)
    have = path.read_text().splitlines() if path.exists() else []
    with open(path, "a") as f:
        for folder in FOLDERS:
            if f"/{folder}/" not in have:
                f.write(f"/{folder}/\n")


def teacher_fp16(out: Path) -> None:
    from safetensors.torch import load_file, save_file

    from embedder.training.teacher import MINILM, resolve

    src = resolve(MINILM)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.bin", "*.onnx", "onnx", "openvino", "*.h5", "*.msgpack"))
    for f in out.rglob("*.safetensors"):
        weights = load_file(f)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, f)


def wheels(out: Path, names: list[str]) -> None:
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(out)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    for name in names:
        if not any(out.glob(f"{name.replace('-', '_')}-*.whl")):
            subprocess.run([*cmd, name], check=True)


def main() -> int:
    exclude()
    data = REPO / ".gpu_data"
    if not data.is_dir():
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--write-corpus", str(data)], check=True)
    teacher_fp16(REPO / ".teacher-fp16")
    wheels(REPO / ".whl", WHEELS)
    wheels(REPO / ".whl-faiss", ["faiss-cpu"])

    def mib(*folders: str) -> str:
        return f"{sum(f.stat().st_size for d in folders for f in (REPO / d).rglob('*') if f.is_file()) / 2**20:.0f} MiB"

    install = ("python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site {} "
               "&& export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 && ")
    print(f"on the GPU machine, first carrying .gpu_data, .teacher-fp16, .whl ({mib(*FOLDERS[:3])} of 64):")
    print("  " + install.format(".whl/*.whl") + "python3 benchmarks/gpu.py --corpus-dir .gpu_data "
          "--teacher .teacher-fp16 --scale-rows 0 --json $OUT/gpu.json")
    print(f"then carrying .whl, .whl-faiss ({mib('.whl', '.whl-faiss')}), `embed encode` at a million:")
    print("  " + install.format(".whl/*.whl .whl-faiss/*.whl") + "python3 benchmarks/gpu.py --only-scale "
          "--json $OUT/gpu-scale.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
