"""``feriactl llm up | down`` (wired by ``register(subparsers)``): a local OpenAI-compatible model server.

``llm up`` starts llama.cpp's ``llama-server`` on a GGUF file — a path, or ``qwen2.5-coder-0.5b`` /
``smollm2-135m`` located in their PyPI packages — waits until ``/health`` answers, and prints the base
URL and the ``configs/models.toml`` lines that use it. In the foreground it runs until Ctrl-C;
``--detach`` leaves it running (pid record and log under ``CODEX_HOME/llm/``) and ``llm down`` stops
it. The logic lives in ``codex_core.llm.local_server``; nothing here imports dagster or torch.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time

from codex_cli.common import CliError, positive_int
from codex_cli.common import home as _home


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _terminate(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cmd_up(args: argparse.Namespace) -> int:
    from codex_core.llm import local_server as ls

    home = _home()
    records = ls.ServerRecords(home.llm_dir)
    recorded = records.get(args.port)
    if recorded is not None and not ls.is_running(recorded):
        records.remove(args.port)  # left by a server that died or a machine that rebooted
        recorded = None
    try:
        model = ls.resolve_model(args.model, home.models_dir, progress=lambda m: print(m, file=sys.stderr, flush=True))
        binary = ls.find_binary()
    except ls.LocalServerError as exc:
        raise CliError(str(exc)) from None
    if ls.port_in_use(args.host, args.port):
        owner = (f"the llama-server started by `feriactl llm up --detach` (pid {recorded.pid}): stop it with "
                 f"`feriactl llm down --port {args.port}`") if recorded else "another program: stop it"
        raise CliError(f"port {args.port} on {args.host} is already in use by {owner}, or pick another --port")
    name = args.alias or model.name
    argv = ls.server_argv(binary, model.path, host=args.host, port=args.port, ctx=args.ctx, threads=args.threads,
                          alias=name)
    log_path = records.log_path(args.port)
    base_url = f"http://{args.host}:{args.port}"
    print(f"starting llama-server on {base_url} with {model.path} (log: {log_path})", file=sys.stderr, flush=True)
    if not args.detach:
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` of this process stops the server like Ctrl-C
    process = ls.start(argv, log_path, detach=args.detach)
    try:
        waited = ls.wait_healthy(base_url, process, timeout=args.timeout, log_path=log_path)
    except ls.LocalServerError as exc:
        _terminate(process)
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        _terminate(process)
        raise
    if args.detach:
        records.write(ls.ServerRecord(
            pid=process.pid, port=args.port, base_url=base_url, model=str(model.path), name=name, argv=argv,
            log=str(log_path), started_at=time.time(),
        ))
    print(f"llama-server ready in {waited:.1f} s: {base_url}  (OpenAI-compatible: {base_url}/v1, model {name!r})")
    print("\nTo answer with it, add to configs/models.toml (or the file CODEX_MODELS_CONFIG names):\n")
    print(ls.models_toml_snippet(name, base_url, args.ctx))
    if args.detach:
        print(f"Running detached (pid {process.pid}); stop it with: feriactl llm down --port {args.port}", flush=True)
        return 0
    print("Ctrl-C stops it.", flush=True)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        # A second Ctrl-C must not abort the shutdown half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _terminate(process)
        return 0
    print(f"llama-server exited with code {code}; see {log_path}", file=sys.stderr)
    return 1


def cmd_down(args: argparse.Namespace) -> int:
    from codex_core.llm import local_server as ls

    records = ls.ServerRecords(_home().llm_dir)
    if args.port is not None:
        record = records.get(args.port)
        if record is None:
            raise CliError(f"no detached llama-server on port {args.port} was started by `feriactl llm up --detach` "
                           f"(records in {records.directory})")
        targets = [record]
    else:
        targets = records.all()
        if not targets:
            print(f"no detached llama-server is recorded in {records.directory}")
            return 0
    for record in targets:
        with contextlib.suppress(KeyboardInterrupt):
            stopped = ls.stop(record)
        records.remove(record.port)
        if stopped:
            print(f"stopped llama-server on port {record.port} (pid {record.pid}, model {record.name})")
        else:
            print(f"llama-server on port {record.port} (pid {record.pid}) was not running any more; record removed")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from codex_core.llm.local_server import DEFAULT_CTX, DEFAULT_MODEL, DEFAULT_PORT, MODELS

    llm = sub.add_parser("llm", help="a local OpenAI-compatible model server (llama.cpp llama-server)")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True)
    p = llm_sub.add_parser("up", help="start llama-server on a GGUF model, wait until it is healthy, print its config")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH_OR_NAME",
                   help=f"a .gguf file, or one of: {', '.join(sorted(MODELS))} (default {DEFAULT_MODEL})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=positive_int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--ctx", type=positive_int, default=DEFAULT_CTX,
                   help=f"context window in tokens (llama-server --ctx-size; default {DEFAULT_CTX})")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: llama-server's choice)")
    p.add_argument("--alias", metavar="NAME", help="the model name the server answers to (default: the model's name)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for /health (default 180)")
    p.add_argument("--detach", action="store_true",
                   help="leave it running in the background (pid under CODEX_HOME/llm); stop with `feriactl llm down`")
    p.set_defaults(func=cmd_up)
    p = llm_sub.add_parser("down", help="stop llama-server(s) started with `feriactl llm up --detach`")
    p.add_argument("--port", type=positive_int, help="only the one on this port (default: every recorded one)")
    p.set_defaults(func=cmd_down)
