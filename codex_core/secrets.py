"""Find and mask secrets in source and configuration text, keeping every line where it was.

Masking replaces the secret part of a line with ``«redacted:<kind>»`` and nothing else: the text
keeps exactly as many ``"\\n"`` as before, so line numbers, chunk spans and citations computed on
the masked text point at the same lines as in the original file. It is deterministic (same input,
same output) and idempotent (masking masked text changes nothing), so ingestion and citation
verification can each mask the same file independently and get the same hash.

What is masked (``SECRET_KINDS``, most specific first):

- ``private_key``: the body of PEM private-key blocks (RSA/EC/DSA/OPENSSH/ENCRYPTED/PGP), line by
  line when the block spans lines, in one piece when it sits on one line with ``\\n`` escapes
  (service-account JSON). The BEGIN/END markers are kept: they are not secret and tell a reader
  what was there (unless the whole value is masked because a secret name holds it). Certificates
  and public keys are left alone.
- token shapes, masked wherever they appear, even when they are obviously fake (a shape cannot
  tell a documented example from a live key, and masking a fake one costs nothing):
  ``aws_access_key`` (AKIA/ASIA/ABIA/ACCA + 16), ``aws_secret_key`` (40 base64 characters assigned
  to an aws_secret…/secret_access_key name), ``github_token`` (ghp_/gho_/ghu_/ghs_/ghr_,
  github_pat_), ``slack_token`` (xox[abposr]- tokens, incoming-webhook paths), ``google_api_key``
  (AIza…), ``stripe_key`` (sk_/rk_ live and test keys), ``openai_key`` (sk-…, sk-proj-…, sk-ant-…;
  must contain a digit), ``jwt`` (eyJ….eyJ….sig), ``auth_header`` (Bearer/Basic/token credentials
  of 16+ characters containing a digit).
- ``url_credentials``: the password of ``scheme://user:password@host``; the user name is kept.
- ``password`` / ``assigned_secret``: the value assigned to a secret-looking name
  (password, passwd, passphrase, pwd, pass, secret, token, credential(s), api key, access key,
  private key, auth key, signing key, …) in code, YAML, JSON, INI, TOML, .env, shell, Dockerfile
  or XML (``<password>…</password>``). The name is kept, only the value is masked.
- ``high_entropy_secret``: a random-looking value (20+ characters of base64/hex alphabet, at least
  2 digits and 2 letters, Shannon entropy >= 3.5 bits per character) assigned to a weaker name
  (``key``, ``salt``, ``auth``, ``cookie``, ``signature``, ``hmac``, ``seed``, …).

What is deliberately NOT masked (false-positive policy):

- values that are not literals: calls (``token = get_token()``), subscripts and attribute chains
  (``password = os.environ["X"]``, ``settings.SECRET``), ``None``/``null``/booleans/type names,
  the name itself (``password=password``), template and environment references (``${X}``, ``$X``,
  ``{{ x }}``, ``%(x)s``, ``<your-token>``), YAML anchors/tags/block indicators;
- placeholders: values shorter than 4 characters, runs of one filler character (``xxx``,
  ``****``), well-known dummies (``changeme``, ``example``, ``dummy``, ``your_api_key``, values
  containing ``placeholder``/``changeme``/``example``/``redacted``/``xxx``/``...``), values that
  name what they stand for and hold no digit (``my-secret``, ``secret_value``, ``new-passphrase``;
  ``Password123!`` is still masked), and values that are only an interpolation (``f"?{sas_token}"``);
- numbers assigned to non-password names (``tokens_per_second: 14.2``), prose of three or more
  words (help texts), and — in source files only — literals that read as identifiers or labels
  (``INPUT_TOKEN_KEY = "gen_ai.usage.input_tokens"``, ``ENV_SECRET = "HEALTHCARE_SECRET"``);
- names that only describe a secret: ``*_file``, ``*_path``, ``*_url``, ``*_name``, ``*_type``,
  ``*_length``, ``*_ttl``, ``*_label``, ``*_prompt``, ``max_*``, ``is_*`` … (``token_url``,
  ``max_tokens``, ``password_min_length``);
- random-looking strings assigned to ordinary names (git shas, hashes, ids in code are not secrets).

Unquoted values (``PASSWORD=hunter2``, ``password: hunter2``) are masked only in configuration-
shaped lines (the name starts the line, optionally after ``export``/``set``/``ENV``/``ARG``/``- ``)
and never in files whose ``path`` says they are source code, where an unquoted value is a variable
reference. Without a ``path`` every file is treated as possibly configuration: a Python line
``token = session_value`` is then masked too (a harmless false positive). Callers that mask the same
file twice (ingestion and citation verification) must pass the same ``path`` both times.

Known gaps: multi-line YAML block scalars after a secret name (``password: |``), secrets split
across string concatenations, and values whose quotes are not closed on the same line.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath

# Bump when detection changes: a file masked by another version may hash differently, so an index
# built with one version cannot be verified with another.
MASKER_VERSION = 1

SECRET_KINDS: tuple[str, ...] = (
    "private_key",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "slack_token",
    "google_api_key",
    "stripe_key",
    "openai_key",
    "jwt",
    "auth_header",
    "url_credentials",
    "password",
    "assigned_secret",
    "high_entropy_secret",
)
_PRIORITY = {kind: i for i, kind in enumerate(SECRET_KINDS)}
REDACTED_PREFIX = "«redacted:"


def redaction(kind: str) -> str:
    """The text that replaces a secret of ``kind``."""
    return f"{REDACTED_PREFIX}{kind}»"


@dataclass(frozen=True)
class SecretFinding:
    """Where a secret was (never what it was).

    ``line`` is 1-based; ``start_col``/``end_col`` are 0-based, end-exclusive character offsets
    into that line of the ORIGINAL text. A private key spanning several lines yields one finding
    per masked line.
    """

    kind: str
    line: int
    start_col: int
    end_col: int


# --------------------------------------------------------------------------- token shapes

# (kind, pattern, needles): a pattern only runs when one of its needles occurs in the text (``str``
# search is ~100x faster than a regex scan, and most files hold none of these shapes). Needles
# in lower case are looked up in the lower-cased text. The whole match is the secret.
_TOKEN_PATTERNS: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    ("aws_access_key", re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
     ("AKIA", "ASIA", "ABIA", "ACCA")),
    ("github_token", re.compile(
        r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])"
    ), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    ("slack_token", re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,250}"), ("xox",)),
    ("google_api_key", re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"), ("AIza",)),
    ("stripe_key", re.compile(r"(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,247}(?![A-Za-z0-9])"),
     ("_live_", "_test_")),
    ("jwt", re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), ("eyJ",)),
)
# The same, but only capture group 1 is the secret (the rest of the match is context that stays).
_GROUP_PATTERNS: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    ("aws_secret_key", re.compile(
        r"(?i:aws[_.-]?secret[_.-]?(?:access[_.-]?)?key|secret[_.-]?access[_.-]?key)[\"'`]?\]?[ \t]*"
        r"(?::=|=>|=|:)[ \t]*[\"'`]?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
    ), ("secret",)),
    ("slack_token", re.compile(r"hooks\.slack\.com/services/([A-Za-z0-9_/]{8,300})"), ("hooks.slack.com",)),
    ("openai_key", re.compile(
        r"(?<![A-Za-z0-9_-])(sk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_-]{20,300})(?![A-Za-z0-9_-])"
    ), ("sk-",)),
    ("auth_header", re.compile(r"(?i)\b(?:bearer|basic|token)[ \t]+([A-Za-z0-9._~+/=-]{16,2000})"),
     ("bearer", "basic", "token")),
    ("url_credentials", re.compile(
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s/:@'\"<>`]{0,256}:([^\s/'\"<>`]{1,256})@(?=[^\s/@'\"<>`])"
    ), ("://",)),
)
_NEEDS_DIGIT = frozenset({"openai_key", "auth_header"})

# --------------------------------------------------------------------------- private keys

_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# One line of a key body as it appears in files and in code: indentation, an optional comment
# marker or quote, the base64, an optional "\n" escape, an optional closing quote, concatenation.
_PEM_BODY = re.compile(
    r"[ \t]*(?:#|//|\*|;)?[ \t]*(?:[bBrRuU]?[\"'`])?[ \t]*"
    r"(?P<b64>[A-Za-z0-9+/]+={0,2}|«redacted:private_key»)?"
    r"(?:\\r)?(?:\\n)?[\"'`]?[ \t]*[,+\\;)]*[ \t]*\r?"
)
_PEM_HEADER = re.compile(r"[ \t]*[\"'`]?(?:Proc-Type|DEK-Info|Version|Comment|Hash|Charset):[^\n]*")
_PEM_INLINE_BODY = re.compile(r"(?:\\[rn]|[A-Za-z0-9+/=\s]|«redacted:private_key»)+")
_PEM_EDGE = re.compile(r"[ \t]*[\"'`]?(?:\\[rn])*(?P<b64>[A-Za-z0-9+/]+={0,2})?(?:\\[rn])*[ \t]*")
_UNCONFIRMED_MIN_RUN = 40  # without an END marker, only lines that are clearly key material


# --------------------------------------------------------------------------- assignments

# Every secret-looking name contains one of these (found with str.find on the lower-cased text:
# several times faster than any regex scan, which matters on megabyte files with no secrets).
_KEYWORDS = ("pw", "pass", "secret", "salt", "sig", "seed", "token", "cred", "cookie", "key", "auth", "hmac")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_IDENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$.-")
# After the name: closing quote/bracket of a key, an optional type annotation, the operator.
_QUOTED_AFTER_NAME = re.compile(
    r"[\"'`]?\]?(?:[ \t]*:[ \t]*[A-Za-z_][\w.\[\], |]{0,40}?)?[ \t]*(?P<op>:=|==|!=|=>|\?=|=|:)[ \t]*"
    r"[rRbBuUfF]{0,2}(?:\"(?P<dq>(?:[^\"\\\n]|\\.)*)\"|'(?P<sq>(?:[^'\\\n]|\\.)*)'|`(?P<bq>[^`\n]*)`)"
)
_UNQUOTED_AFTER_NAME = re.compile(r"[\"']?[ \t]*(?::=|\?=|=|:(?=[ \t]))[ \t]*(?P<value>[^\s\"'`][^\n]*)")
_LINE_START_PREFIX = re.compile(
    r"[ \t]*(?:(?:export|set|setx|ENV|ARG|declare(?:[ \t]+-\w+)?|local|readonly)[ \t]+|-[ \t]+)?[\"']?"
)
_MAX_PREFIX = 256
_TRAILING_COMMENT = re.compile(r"[ \t]+#.*$")
_XML_SECRET = re.compile(
    r"<(?P<tag>[\w.:-]*(?i:password|passwd|secret|token|api[_-]?key|apikey)[\w.:-]*)>(?P<value>[^<\n]{1,500})</(?P=tag)>"
)

_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase", "passcode", "pwd", "pass", "pw"})
_STRONG_WORDS = frozenset({"secret", "token", "credential", "credentials", "apikey", "creds", "cred"})
_STRONG_PAIRS = frozenset({
    ("api", "key"), ("access", "key"), ("private", "key"), ("auth", "key"), ("signing", "key"),
    ("encryption", "key"), ("master", "key"), ("session", "key"), ("account", "key"), ("app", "secret"),
})
_WEAK_LAST = frozenset({"key", "salt", "auth", "authorization", "cookie", "signature", "sig", "hmac", "seed"})
_LAST_ONLY = frozenset({"pass", "pwd", "pw"})  # too ambiguous in the middle of a name (pass_through)
_EXCLUDED_LAST = frozenset({
    "file", "files", "path", "paths", "dir", "directory", "url", "urls", "uri", "endpoint", "host", "name",
    "names", "env", "var", "vars", "type", "types", "len", "length", "count", "size", "prefix", "suffix",
    "pattern", "patterns", "regex", "regexp", "re", "rx", "field", "fields", "column", "col", "header", "headers",
    "param", "params", "label", "kind", "mode", "format", "fmt", "policy", "expiry", "expires", "expiration",
    "ttl", "timeout", "id", "ids", "hint", "prompt", "placeholder", "message", "msg", "text", "help", "error",
    "errors", "description", "desc", "title", "template", "limit", "limits", "min", "max", "required",
    "enabled", "encoding", "algorithm", "alg", "method", "scheme", "provider", "source", "store", "manager",
    "class", "cls", "factory", "service", "validator", "version", "index", "idx", "number", "num", "position",
    "pos", "start", "end", "char", "chars", "location", "loc", "schema", "spec", "parser", "lexer", "reader",
    "loader", "getter", "setter", "callback", "handler", "hook", "fn", "func", "id_", "sep", "separator",
    "delimiter", "style", "color", "icon", "class_name", "selector", "input", "widget", "button", "link",
    "page", "view", "form", "route", "question", "answer", "rules", "rule", "strength", "score",
    # units: a measurement about tokens or keys, not a credential
    "ms", "s", "sec", "secs", "seconds", "bytes", "kb", "mb", "pct", "percent", "ratio", "rate", "usd", "cost",
    "price", "budget", "window", "per",
})
_EXCLUDED_FIRST = frozenset({
    "max", "min", "num", "n", "is", "has", "use", "show", "enable", "enabled", "disable", "no", "count",
    "total", "forgot", "reset", "bypass",
})
_PLACEHOLDERS = frozenset({
    "changeme", "change_me", "change-me", "changeit", "password", "passwd", "secret", "token", "example",
    "sample", "test", "testing", "dummy", "fake", "placeholder", "none", "null", "nil", "undefined", "todo",
    "fixme", "redacted", "hidden", "masked", "empty", "default", "foo", "bar", "foobar", "pass", "string",
    "str", "int", "bytes", "bool", "boolean", "any", "object", "optional", "required", "true", "false", "yes",
    "no", "on", "off", "secretstr", "secret_str", "mypassword", "my_password", "apikey", "api_key", "api-key",
    "your_password", "your-password", "yourpassword", "your_token", "your-token", "your_api_key",
    "your-api-key", "your_secret", "your-secret", "secret_key", "access_key", "private_key", "notasecret",
    "not-a-secret", "not_a_secret", "replaceme", "replace_me", "replace-me", "xxxxxx", "******",
})
_PLACEHOLDER_MARKERS = ("changeme", "placeholder", "example", "redacted", "replace_with", "replace-with",
                        "replace_me", "insert_", "insert-", "your_", "your-", "<your", "dummy", "xxx", "...", "…")
# A value naming what it stands for ("my-secret", "secret_value", "new-passphrase") is a stand-in,
# unless it has digits ("Password123!" is a (bad) real password).
_SELF_DESCRIBING = ("secret", "token", "password", "passwd", "passphrase", "apikey", "api_key", "api-key",
                    "credential")
_INTERPOLATION = re.compile(r"\$?\{[^{}]*\}|%\([^)]*\)[sd]|%[sd]")
_CALL = re.compile(r"[\w.$]+\(.*\)")
# Values of non-password names that read as identifiers, labels or prose, not credentials:
# "input_tokens", "gen_ai.usage.output_tokens", "HEALTHCARE_SECRET", "Use a User Access Token ...".
_IDENTIFIER_LIKE = re.compile(r"_*[A-Za-z]+(?:[._\-/: ][A-Za-z]+)*")
_REFERENCE = re.compile(
    r"<[^<>]*>|\$\{[^}]*\}|\$\(.*\)|\$[A-Za-z_]\w*|\{\{.*\}\}|\{%.*%\}|%\([^)]*\)[sd]|\{[A-Za-z_][\w.]*\}|"
    r"%[A-Za-z_]\w*%|@[A-Za-z_][\w.]*@|\[[^\]]*\]"
)
_FILLER = frozenset("xX*.-_#?<>0 ")
# Unquoted values that are code: a call or subscript, or a type annotation with a default.
_CALL_OR_SUBSCRIPT = re.compile(r"[\w.$]+[\[(]")
_ANNOTATED_DEFAULT = re.compile(r"[A-Za-z_][\w.\[\], |]*[ \t]*=[ \t]")
_ATTRIBUTE_CHAIN = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+[;,]?")
_UNQUOTED_CODE_START = frozenset("$%{[(<&*!|>@~")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[,;]?")
_BARE_WORD = re.compile(r"[A-Za-z_]+")
_RANDOM_ALPHABET = re.compile(r"[A-Za-z0-9+/=_-]+")

_CODE_SUFFIXES = frozenset({
    ".py", ".pyi", ".pyx", ".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".mts", ".cts", ".go", ".rs", ".java",
    ".kt", ".kts", ".scala", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cs", ".rb", ".php", ".swift",
    ".m", ".mm", ".lua", ".dart", ".ex", ".exs", ".erl", ".hs", ".ml", ".clj", ".groovy", ".r", ".jl", ".pl",
    ".pm", ".vue", ".svelte", ".fs", ".vb", ".zig", ".nim", ".sol",
})


def _is_code_path(path: str | None) -> bool:
    return path is not None and PurePosixPath(path).suffix.lower() in _CODE_SUFFIXES


def _name_segments(name: str) -> list[str]:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return [s for s in re.split(r"[^A-Za-z0-9]+", name.lower()) if s]


@lru_cache(maxsize=4096)
def _classify_name(name: str) -> str | None:
    """``password`` / ``assigned_secret`` (any literal is secret), ``high_entropy_secret`` (only a
    random-looking literal is), or None (not a secret name)."""
    segments = _name_segments(name)
    if not segments or segments[-1] in _EXCLUDED_LAST or segments[0] in _EXCLUDED_FIRST:
        return None
    if segments in (["pwd"], ["oldpwd"]):
        return None  # the shell's working directory
    last = segments[-1]
    if any(s in _PASSWORD_WORDS and (s not in _LAST_ONLY or s == last) for s in segments):
        return "password"
    pairs = zip(segments, segments[1:], strict=False)
    if any(s in _STRONG_WORDS for s in segments) or any(pair in _STRONG_PAIRS for pair in pairs):
        return "assigned_secret"
    if last in _WEAK_LAST:
        return "high_entropy_secret"
    return None


def _is_placeholder(value: str, name: str = "") -> bool:
    stripped = value.strip()
    lowered = stripped.lower()
    if len(stripped) < 4 or REDACTED_PREFIX in stripped:
        return True
    if set(stripped) <= _FILLER or len(set(lowered)) == 1:
        return True
    if lowered in _PLACEHOLDERS or lowered.strip("<>[]{}()\"'") in _PLACEHOLDERS:
        return True
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        return True
    if _REFERENCE.fullmatch(stripped) or stripped.startswith("{") or _CALL.fullmatch(stripped):
        return True  # templates, f-string fields, calls quoted in docs
    if sum(c.isalnum() for c in _INTERPOLATION.sub("", stripped)) < 4:
        return True  # f"?{sas_token}": the secret is elsewhere
    if not any(c.isdigit() for c in lowered) and any(word in lowered for word in _SELF_DESCRIBING):
        return True
    bare_name = name.lstrip("$-.").lower()
    return bool(bare_name) and lowered in (bare_name, bare_name.rsplit(".", 1)[-1])


def _looks_random(value: str) -> bool:
    if len(value) < 20 or not _RANDOM_ALPHABET.fullmatch(value):
        return False
    digits = sum(c.isdigit() for c in value)
    letters = sum(c.isalpha() for c in value)
    if digits < 2 or letters < 2:
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= 3.5


def _unquoted_is_literal(value: str, name: str) -> bool:
    if value[0] in _UNQUOTED_CODE_START:
        return False
    if _CALL_OR_SUBSCRIPT.match(value) or _ANNOTATED_DEFAULT.match(value) or _ATTRIBUTE_CHAIN.fullmatch(value):
        return False
    return not _is_placeholder(value.rstrip(";,"), name)


# --------------------------------------------------------------------------- detection


class _Spans:
    """Secret spans as absolute (start, end, kind) offsets; none of them contains a newline."""

    def __init__(self, text: str):
        self.text = text
        self.items: list[tuple[int, int, str]] = []

    def add(self, start: int, end: int, kind: str) -> None:
        if end > start and "\n" not in self.text[start:end]:
            self.items.append((start, end, kind))


def _present(text: str, lowered: str, needles: tuple[str, ...]) -> bool:
    return any(needle in (lowered if needle.islower() else text) for needle in needles)


def _lower(text: str) -> str:
    """Lower-cased ``text`` with every character at the same index (``str.lower`` may expand one)."""
    lowered = text.lower()
    if len(lowered) != len(text):
        lowered = text.translate(_ASCII_LOWER)
    return lowered


def _keyword_hits(lowered: str) -> list[int]:
    hits: list[int] = []
    for keyword in _KEYWORDS:
        at = lowered.find(keyword)
        while at != -1:
            hits.append(at)
            at = lowered.find(keyword, at + 1)
    hits.sort()
    return hits


def _find_tokens(text: str, lowered: str, spans: _Spans) -> None:
    for kind, pattern, needles in _TOKEN_PATTERNS:
        if not _present(text, lowered, needles):
            continue
        for match in pattern.finditer(text):
            spans.add(match.start(), match.end(), kind)
    for kind, pattern, needles in _GROUP_PATTERNS:
        if not _present(text, lowered, needles):
            continue
        for match in pattern.finditer(text):
            secret = match.group(1)
            if kind in _NEEDS_DIGIT and not any(c.isdigit() for c in secret):
                continue
            if kind == "url_credentials" and _is_placeholder(secret, "password"):
                continue
            spans.add(match.start(1), match.end(1), kind)


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, len(text) if end == -1 else end


def _mask_runs(text: str, start: int, end: int, spans: _Spans, min_run: int) -> None:
    """Mask each base64 run in ``text[start:end]`` (``\\n`` escapes are not part of a run)."""
    for match in re.finditer(r"\\[rnt]|[A-Za-z0-9+/]+={0,2}", text[start:end]):
        if not match.group().startswith("\\") and len(match.group()) >= min_run:
            spans.add(start + match.start(), start + match.end(), "private_key")


def _find_private_keys(text: str, spans: _Spans) -> None:
    for begin in _PEM_BEGIN.finditer(text):
        line_start, line_end = _line_bounds(text, begin.start())
        end_marker = _PEM_END.search(text, begin.end(), line_end)
        if end_marker is not None:  # the whole key on one line ("...\\nMIIE...\\n..." in JSON)
            inner = text[begin.end():end_marker.start()]
            if inner.strip() and _PEM_INLINE_BODY.fullmatch(inner) and REDACTED_PREFIX not in inner:
                spans.add(begin.end(), end_marker.start(), "private_key")
            continue
        body: list[tuple[int, int]] = []  # (start, end) of each base64 run of the following lines
        confirmed = False
        end_line: tuple[int, int, re.Match[str]] | None = None
        pos = line_end + 1
        while pos <= len(text):
            start, stop = pos, text.find("\n", pos)
            stop = len(text) if stop == -1 else stop
            line = text[start:stop]
            end_here = _PEM_END.search(line)
            if end_here is not None:
                confirmed, end_line = True, (start, stop, end_here)
                break
            body_match = _PEM_BODY.fullmatch(line)
            if body_match is None and not _PEM_HEADER.fullmatch(line):
                break
            if body_match is not None and body_match.group("b64") and REDACTED_PREFIX not in body_match.group("b64"):
                body.append((start + body_match.start("b64"), start + body_match.end("b64")))
            pos = stop + 1
        min_run = 1 if confirmed else _UNCONFIRMED_MIN_RUN
        after_begin = text[begin.end():line_end]
        edge = _PEM_EDGE.fullmatch(after_begin.rstrip("\"'`,+ \t\r"))
        if edge is not None and edge.group("b64"):
            _mask_runs(text, begin.end(), line_end, spans, max(min_run, 4))
        for start, stop in body:
            if stop - start >= min_run:
                spans.add(start, stop, "private_key")
        if end_line is not None:
            start, _, marker = end_line
            before = text[start:start + marker.start()]
            edge = _PEM_EDGE.fullmatch(before.lstrip(" \t\"'`"))
            if edge is not None and edge.group("b64"):
                _mask_runs(text, start, start + marker.start(), spans, 1)


def _find_assignments(text: str, lowered: str, spans: _Spans, *, code: bool) -> None:
    length = len(text)
    last_end = -1
    for hit in _keyword_hits(lowered):
        if hit < last_end:
            continue
        start = hit
        while start > 0 and text[start - 1] in _IDENT_CHARS:
            start -= 1
        end = hit
        while end < length and text[end] in _IDENT_CHARS:
            end += 1
        last_end = end
        name = text[start:end].rstrip(".-")
        end = start + len(name)
        kind = _classify_name(name.lstrip("$-."))
        if kind is None:
            continue
        quoted = _QUOTED_AFTER_NAME.match(text, end)
        if quoted is not None:
            group = next(g for g in ("dq", "sq", "bq") if quoted.group(g) is not None)
            value = quoted.group(group)
            if quoted.group("op") in ("==", "!=") and _BARE_WORD.fullmatch(value):
                continue  # a lexer's `token == "return"`, not a hard-coded credential
            if _value_is_secret(value, name, kind, code=code):
                spans.add(quoted.start(group), quoted.end(group), kind)
            continue
        if code:
            continue
        # Bounded look-back (a name this far into its line is not at its start), and before reading the
        # value: at most one name per line gets that far, so values are read once (linear time).
        window = max(0, start - _MAX_PREFIX)
        line_start = text.rfind("\n", window, start) + 1
        if (line_start == 0 and window > 0) or not _LINE_START_PREFIX.fullmatch(text, line_start, start):
            continue
        unquoted = _UNQUOTED_AFTER_NAME.match(text, end)
        if unquoted is None:
            continue
        raw = unquoted.group("value")
        value = _TRAILING_COMMENT.sub("", raw).rstrip(" \t\r")
        if value and _unquoted_is_literal(value, name) and _value_is_secret(value, name, kind):
            spans.add(unquoted.start("value"), unquoted.start("value") + len(value), kind)


def _value_is_secret(value: str, name: str, kind: str, *, code: bool = False) -> bool:
    if kind == "high_entropy_secret":
        return _looks_random(value) and REDACTED_PREFIX not in value
    if kind != "password":
        stripped = value.strip()
        if _NUMBER.fullmatch(stripped):
            return False  # "tokens_per_second: 14.2" is a measurement; a numeric password is still a password
        identifier = code and _IDENTIFIER_LIKE.fullmatch(stripped)
        if identifier and (not stripped.isalpha() or stripped.islower() or stripped.isupper()):
            return False  # in source code such a literal is a dictionary key or a label
        if len(stripped.split()) >= 3:
            return False  # prose: help text, error messages
    return not _is_placeholder(value, name)


def _find_xml(text: str, spans: _Spans) -> None:
    for match in _XML_SECRET.finditer(text):
        value = match.group("value")
        kind = _classify_name(match.group("tag").split(":")[-1])
        if kind and _value_is_secret(value, match.group("tag"), kind):
            spans.add(match.start("value"), match.end("value"), kind)


def _merge(items: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Union of overlapping spans, named after the most specific kind among them."""
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(items):
        if merged and start < merged[-1][1]:
            last_start, last_end, last_kind = merged[-1]
            best = kind if _PRIORITY[kind] < _PRIORITY[last_kind] else last_kind
            merged[-1] = (last_start, max(end, last_end), best)
        else:
            merged.append((start, end, kind))
    return merged


def mask_secrets(text: str, *, path: str | None = None) -> tuple[str, list[SecretFinding]]:
    """``text`` with every secret replaced by ``«redacted:<kind>»``, and where each one was.

    The result has exactly as many newlines as ``text`` (every line keeps its number). ``path``
    only decides whether unquoted assignments are read as configuration (see the module docstring);
    pass the same value every time the same file is masked.
    """
    spans = _Spans(text)
    if "PRIVATE KEY" in text:
        _find_private_keys(text, spans)
    lowered = _lower(text)
    _find_tokens(text, lowered, spans)
    _find_assignments(text, lowered, spans, code=_is_code_path(path))
    if "</" in text:
        _find_xml(text, spans)
    if not spans.items:
        return text, []
    merged = _merge(spans.items)
    newlines = [m.start() for m in re.finditer("\n", text)]
    pieces: list[str] = []
    findings: list[SecretFinding] = []
    cursor = 0
    for start, end, kind in merged:
        pieces.append(text[cursor:start])
        pieces.append(redaction(kind))
        cursor = end
        line_index = bisect_right(newlines, start)
        line_start = newlines[line_index - 1] + 1 if line_index else 0
        findings.append(SecretFinding(kind, line_index + 1, start - line_start, end - line_start))
    pieces.append(text[cursor:])
    masked = "".join(pieces)
    if masked.count("\n") != len(newlines):  # spans never hold a newline; this guards the promise
        raise AssertionError("secret masking changed the number of lines")
    return masked, findings


def contains_secret(text: str, *, path: str | None = None) -> bool:
    """Whether ``mask_secrets`` would mask anything (for log scrubbers and pre-flight checks)."""
    return bool(mask_secrets(text, path=path)[1])


def redact(text: str, *, path: str | None = None) -> str:
    """Just the masked text."""
    return mask_secrets(text, path=path)[0]
