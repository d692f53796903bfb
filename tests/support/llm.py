"""No LLM can run in these tests: an Answerer pointed at a closed port answers extractively."""

from __future__ import annotations

import socket

from codex_core.llm import Answerer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_answerer() -> Answerer:
    return Answerer.from_config(env={"OLLAMA_HOST": f"http://127.0.0.1:{closed_port()}"})
