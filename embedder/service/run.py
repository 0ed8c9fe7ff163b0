"""`embed serve`: checks that fail before a port is bound, then uvicorn."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from ..errors import EmbedderError, check_range

SAGEMAKER_MODEL_DIR = "/opt/ml/model"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_port(port: int | None) -> int:
    """--port, else SageMaker's SAGEMAKER_BIND_TO_PORT, else 8080 (SageMaker's default too)."""
    if port is None:
        env = os.environ.get("SAGEMAKER_BIND_TO_PORT")
        if env is not None:
            if not env.isdigit():
                raise EmbedderError(f"SAGEMAKER_BIND_TO_PORT={env!r}: not a port number")
            port = int(env)
        else:
            port = 8080
    check_range("--port", port, 0, 65535)
    return port


def resolve_folder(folder: Path | None) -> Path:
    """The folder to serve; in SageMaker's container, where no folder is named, /opt/ml/model."""
    if folder is not None:
        return folder
    if Path(SAGEMAKER_MODEL_DIR).is_dir():
        return Path(SAGEMAKER_MODEL_DIR)
    raise EmbedderError("no folder to serve: name an `embed encode` output folder or a model folder")


def check_bind(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise EmbedderError(f"--host {host!r}: cannot resolve ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise EmbedderError(f"{host}:{port}: cannot listen there ({e.strerror})") from None


def serve(folder: Path | None, model: Path | None = None, host: str = "127.0.0.1", port: int | None = None,
          api_key: str | None = None, no_auth: bool = False, device: str = "auto", limits=None,
          announce=print, runtime: str = "torch", processes: int = 1, shared_model: bool = False) -> None:
    """Serve until interrupted (SIGINT/SIGTERM shut down cleanly: added documents are checkpointed).
    With `processes` > 1, that many server processes share the port (`processes.py`), each with a
    model of its own, or with `shared_model` all encoding with the first's (`shared_model.py`)."""
    if shared_model and processes < 2:
        raise EmbedderError("--shared-model: one model for several server processes; set --processes 2 or more")
    folder = resolve_folder(folder)
    port = resolve_port(port)
    if not is_loopback(host) and not api_key and not no_auth:
        raise EmbedderError(f"--host {host}: not a loopback address, and no API key; set --api-key "
                            "(or EMBED_API_KEY), or pass --no-auth where a gateway authenticates callers "
                            "(a SageMaker endpoint does)")
    private = None
    if processes > 1:  # before prometheus_client is imported: its counts go to files all processes share
        from .metrics import SHARED_DIR
        from .processes import private_folder

        private = private_folder()
        (private / "metrics").mkdir()
        os.environ[SHARED_DIR] = str(private / "metrics")
    try:
        try:
            import uvicorn

            from .app import Limits, create_app
        except ImportError as e:
            raise EmbedderError(f"`embed serve` needs the serve extra ({e.name} is missing): "
                                "pip install 'embedder[serve]'") from None
        check_bind(host, port)
        limits = limits or Limits()
        limits.processes, limits.shared_model = processes, shared_model
        encode_socket = None
        if shared_model:
            from .processes import unix_socket
            from .shared_model import MODEL_SOCKET

            encode_socket = unix_socket(private / MODEL_SOCKET)
        app = create_app(folder, model=model, device=device, api_key=api_key, limits=limits, runtime=runtime,
                         encode_socket=encode_socket)
        announce(f"serving {folder} on http://{host}:{port} (OpenAPI schema at /docs)")
        options = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 10}
        if processes == 1:
            uvicorn.run(app, host=host, port=port, **options)
            return
        from .processes import STORE_SOCKET, Spec, serve_processes

        store = str(private / STORE_SOCKET) if app.state.service.collection is not None else None
        spec = Spec(str(folder), str(model) if model else None, device, api_key, limits, runtime, store, options,
                    str(private / MODEL_SOCKET) if shared_model else None)
        if shared_model:
            announce(f"one model, in this process ({os.getpid()}), encodes for all of them")
        serve_processes(processes, host, port, app, spec, announce)
    finally:
        if private is not None:
            import shutil

            shutil.rmtree(private, ignore_errors=True)
