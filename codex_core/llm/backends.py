"""Chat backends (Ollama, OpenAI-compatible servers) and the circuit breaker in front of each.

A backend is one server. Every model served by it shares its breaker: when the server is down,
the first failed connection (refused at once, or cut off by the short connect timeout) marks it
failed for the rest of the request, and after ``failure_threshold`` consecutive transport failures
the breaker opens and later requests skip the server without touching the network until the
cool-down has passed; then one probe request is let through (half-open) and its outcome closes or
re-opens the breaker.

``chat_stream`` yields the answer's text as the server generates it, then one ``ChatReply`` with the
whole text and the server's counts. Its errors are the same ``BackendError``s as ``chat``'s; one
raised after some text was yielded means the answer was cut off.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import ollama

from codex_core.llm.sse import read_events

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class BackendError(RuntimeError):
    """A model did not produce an answer.

    ``transport``: the server itself could not be reached (refused, connect timeout, connection
    dropped); only these count against the server's circuit breaker and make the rest of the
    request skip the server. ``responded``: the server sent an HTTP response (an error status or a
    malformed body), which proves it is up even though this model failed.
    """

    def __init__(self, message: str, *, transport: bool, responded: bool = False) -> None:
        super().__init__(message)
        self.transport = transport
        self.responded = responded


@dataclass(frozen=True)
class ChatReply:
    content: str
    model: str  # as reported by the server
    prompt_tokens: int | None  # as reported by the server
    completion_tokens: int | None
    finish_reason: str | None


class Backend(Protocol):
    kind: str
    base_url: str

    def chat(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
        context_window: int, timeout: float, seed: int | None = None,
    ) -> ChatReply: ...

    def chat_stream(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
        context_window: int, timeout: float, seed: int | None = None,
    ) -> Iterator[str | ChatReply]:
        """Pieces of the answer as they are generated, then one ``ChatReply`` (the whole answer);
        ``timeout`` bounds the whole generation, as for ``chat``."""
        ...

    def list_models(self, timeout: float) -> list[str]: ...

    def close(self) -> None: ...


class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (cool-down) -> half-open -> closed/open."""

    def __init__(
        self, failure_threshold: int = 2, cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = max(1, failure_threshold)
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self.cooldown_seconds:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """May a request go to the server now? In half-open, only one probe at a time may."""
        with self._lock:
            state = self._state_locked()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def retry_in(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_seconds - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_in_flight = False
            self.last_error = None

    def record_failure(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            self.last_error = reason
            if self._probe_in_flight or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probe_in_flight = False

    def release_probe(self) -> None:
        """A half-open probe ended without telling anything about the server (e.g. a 404)."""
        with self._lock:
            self._probe_in_flight = False


def _ollama_options(context_window: int, max_tokens: int, temperature: float, seed: int | None) -> dict[str, Any]:
    # num_ctx: Ollama otherwise loads the model with its own default window and silently drops the
    # start of a longer prompt. seed: the same prompt gives the same answer (models.toml ``seed``).
    options: dict[str, Any] = {"num_ctx": context_window, "num_predict": max_tokens, "temperature": temperature}
    if seed is not None:
        options["seed"] = seed
    return options


def _seeded(seed: int | None) -> dict[str, Any]:
    """The OpenAI-compatible body's reproducibility fields. With a seed, also ``cache_prompt: false``:
    llama-server otherwise reuses a cached prompt's state and the same seed samples differently
    (measured: two answers out of two requests; identical with it). vLLM ignores the field."""
    return {"seed": seed, "cache_prompt": False} if seed is not None else {}


def _timeout(total: float, connect: float) -> httpx.Timeout:
    return httpx.Timeout(total, connect=min(connect, total))


class OllamaBackend:
    """Ollama's ``/api/chat`` through the official ``ollama`` client."""

    kind = "ollama"

    def __init__(self, base_url: str, *, connect_timeout: float = 0.3) -> None:
        self.base_url = base_url
        self.connect_timeout = connect_timeout
        self._clients: dict[float, ollama.Client] = {}
        self._lock = threading.Lock()

    def _client(self, timeout: float) -> ollama.Client:
        # The client fixes its timeout at construction; keep one per distinct timeout.
        with self._lock:
            client = self._clients.get(timeout)
            if client is None:
                client = ollama.Client(host=self.base_url, timeout=_timeout(timeout, self.connect_timeout))
                self._clients[timeout] = client
            return client

    def _error(self, exc: Exception, model: str, timeout: float, what: str) -> BackendError:
        """The BackendError for what the official client raised during a chat (``what``: response or stream)."""
        if isinstance(exc, ollama.ResponseError):
            # Before a stream: the HTTP status; inside it (an {"error": ...} line): -1.
            status = f"HTTP {exc.status_code}" if exc.status_code > 0 else "an error mid-stream"
            return BackendError(f"ollama at {self.base_url} answered {status} for {model}: {exc.error}",
                                transport=False, responded=True)
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            # The client translates ConnectError to ConnectionError when not streaming only.
            return BackendError(f"cannot connect to ollama at {self.base_url}", transport=True)
        if isinstance(exc, httpx.TimeoutException):
            return _timeout_error("ollama", self.base_url, exc, timeout)
        if isinstance(exc, httpx.HTTPError):
            return BackendError(f"ollama at {self.base_url} failed: {type(exc).__name__}: {exc}", transport=True)
        # ValueError: a line that is not JSON, or pydantic validation of an unexpected body.
        return BackendError(f"ollama at {self.base_url} sent a malformed {what}: {exc}", transport=False,
                            responded=True)

    def chat(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
        context_window: int, timeout: float, seed: int | None = None,
    ) -> ChatReply:
        try:
            response = self._client(timeout).chat(
                model=model,
                messages=messages,
                stream=False,
                options=_ollama_options(context_window, max_tokens, temperature, seed),
            )
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError) as exc:
            raise self._error(exc, model, timeout, "response") from None
        content = (response.message.content or "") if response.message else ""
        return ChatReply(
            content=content,
            model=response.model or model,
            prompt_tokens=response.prompt_eval_count,
            completion_tokens=response.eval_count,
            finish_reason=response.done_reason,
        )

    def chat_stream(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
        context_window: int, timeout: float, seed: int | None = None,
    ) -> Iterator[str | ChatReply]:
        deadline = time.monotonic() + timeout
        parts: list[str] = []
        last: ollama.ChatResponse | None = None
        try:
            stream = self._client(timeout).chat(
                model=model, messages=messages, stream=True,
                options=_ollama_options(context_window, max_tokens, temperature, seed),
            )
            with contextlib.closing(stream):  # stopping early closes the HTTP response, which stops Ollama
                for chunk in stream:
                    last = chunk
                    text = (chunk.message.content or "") if chunk.message else ""
                    if text:
                        parts.append(text)
                        yield text
                    if time.monotonic() > deadline:
                        raise BackendError(f"ollama at {self.base_url} timed out after {timeout:g}s", transport=False)
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError) as exc:
            raise self._error(exc, model, timeout, "stream") from None
        if last is None or not last.done:
            raise BackendError(f"ollama at {self.base_url} closed the stream before it was done", transport=True)
        yield ChatReply(
            content="".join(parts),
            model=last.model or model,
            prompt_tokens=last.prompt_eval_count,
            completion_tokens=last.eval_count,
            finish_reason=last.done_reason,
        )

    def list_models(self, timeout: float) -> list[str]:
        try:
            listing = self._client(timeout).list()
        except ollama.ResponseError as exc:
            raise BackendError(f"HTTP {exc.status_code}: {exc.error}", transport=True) from None
        except ConnectionError:
            raise BackendError(f"cannot connect to ollama at {self.base_url}", transport=True) from None
        except httpx.TimeoutException as exc:
            raise _timeout_error("ollama", self.base_url, exc, timeout) from None
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}", transport=True) from None
        names: list[str] = []
        for entry in listing.models:
            for name in (entry.model, getattr(entry, "name", None)):
                if name and name not in names:
                    names.append(name)
        return names

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


class OpenAICompatibleBackend:
    """``POST {base_url}/v1/chat/completions`` on llama.cpp ``llama-server``, vLLM, or similar."""

    kind = "openai"

    def __init__(self, base_url: str, *, connect_timeout: float = 0.3, api_key: str | None = None) -> None:
        self.base_url = base_url
        self.connect_timeout = connect_timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=_timeout(60.0, connect_timeout))

    def chat(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
        context_window: int, timeout: float, seed: int | None = None,
    ) -> ChatReply:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": False,
            **_seeded(seed),
        }
        response = self._request("POST", "/v1/chat/completions", timeout, json=body)
        if response.status_code >= 400:
            raise BackendError(
                f"{self.base_url} answered HTTP {response.status_code} for {model}: {response.text[:300]}",
                transport=False, responded=True,
            )
        try:
            data = response.json()
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            message = f"{self.base_url} sent a malformed chat completion: {exc!r}"
            raise BackendError(message, transport=False, responded=True) from None
        usage = data.get("usage") or {}
        return ChatReply(
            content=content,
            model=data.get("model") or model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
        )

    def chat_stream(
        self, model: str, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
        context_window: int, timeout: float, seed: int | None = None,
    ) -> Iterator[str | ChatReply]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            # The token counts come in one last chunk (llama-server, vLLM and OpenAI all honour it).
            "stream_options": {"include_usage": True},
            **_seeded(seed),
        }
        deadline = time.monotonic() + timeout
        parts: list[str] = []
        reply_model, usage, finish, done = None, {}, None, False
        try:
            # Connection: close — llama-server (cpp-httplib) sometimes drops a kept-alive connection
            # after a streamed response, and the next request on it fails with "Server disconnected
            # without sending a response" (measured: 3 of 8 stream-then-request pairs; 0 of 75 with
            # this header). A fresh loopback connection per streamed answer costs well under 1 ms.
            with self._http.stream("POST", "/v1/chat/completions", json=body, headers={"Connection": "close"},
                                   timeout=_timeout(timeout, self.connect_timeout)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise BackendError(
                        f"{self.base_url} answered HTTP {response.status_code} for {model}: {response.text[:300]}",
                        transport=False, responded=True,
                    )
                for event in read_events(response.iter_lines()):
                    if event.data.strip() == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(event.data)
                    except ValueError:
                        chunk = None
                    if event.event == "error" or (isinstance(chunk, dict) and "error" in chunk):
                        detail = chunk.get("error", chunk) if isinstance(chunk, dict) else event.data
                        raise BackendError(f"{self.base_url} reported an error mid-answer for {model}: "
                                           f"{str(detail)[:300]}", transport=False, responded=True)
                    if not isinstance(chunk, dict):
                        raise BackendError(f"{self.base_url} sent a malformed stream event: {event.data[:200]!r}",
                                           transport=False, responded=True)
                    reply_model = chunk.get("model") or reply_model
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        text = ((choice or {}).get("delta") or {}).get("content")
                        if text:
                            parts.append(text)
                            yield text
                        finish = (choice or {}).get("finish_reason") or finish
                    if time.monotonic() > deadline:
                        raise BackendError(f"server at {self.base_url} timed out after {timeout:g}s", transport=False)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, timeout) from None
        if not done and finish is None:
            # The connection ended mid-answer (the server died or was stopped): a transport failure.
            raise BackendError(f"{self.base_url} closed the stream before the answer was finished", transport=True)
        yield ChatReply(
            content="".join(parts),
            model=reply_model or model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=finish,
        )

    def list_models(self, timeout: float) -> list[str]:
        response = self._request("GET", "/v1/models", timeout)
        if response.status_code >= 400:
            raise BackendError(f"HTTP {response.status_code} from /v1/models", transport=True)
        try:
            return [str(m["id"]) for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return []

    def _request(self, method: str, url: str, timeout: float, *, json: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request, turning a failure to get any response (refused, timed out, cut off)
        into a ``BackendError``. A response, even an error status, is left to the caller: what a
        status means differs between a chat call (the model failed) and a model listing."""
        try:
            return self._http.request(method, url, json=json, timeout=_timeout(timeout, self.connect_timeout))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, timeout) from None

    def _transport_error(self, exc: httpx.HTTPError, timeout: float) -> BackendError:
        """No (complete) response: refused, timed out or cut off — the server counts as down."""
        if isinstance(exc, httpx.ConnectError):
            return BackendError(f"cannot connect to {self.base_url}", transport=True)
        if isinstance(exc, httpx.TimeoutException):
            return _timeout_error("server", self.base_url, exc, timeout)
        return BackendError(f"{self.base_url} failed: {type(exc).__name__}: {exc}", transport=True)

    def close(self) -> None:
        self._http.close()


def _timeout_error(what: str, base_url: str, exc: httpx.TimeoutException, timeout: float) -> BackendError:
    if isinstance(exc, httpx.ConnectTimeout):
        message = f"{what} at {base_url} did not accept a connection in time (connect timeout)"
        return BackendError(message, transport=True)
    # Connected, but the model was too slow: another model on the same server may still answer.
    return BackendError(f"{what} at {base_url} timed out after {timeout:g}s", transport=False)


def make_backend(kind: str, base_url: str, *, connect_timeout: float, api_key: str | None = None) -> Backend:
    if kind == "ollama":
        return OllamaBackend(base_url, connect_timeout=connect_timeout)
    if kind == "openai":
        return OpenAICompatibleBackend(base_url, connect_timeout=connect_timeout, api_key=api_key)
    raise ValueError(f"unknown backend kind {kind!r}: use 'ollama' or 'openai'")
