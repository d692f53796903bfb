"""Which names hold secrets, and which values are stand-ins rather than credentials.

Key-aware detection: a value under a credential-looking name (password, secret, token, api key,
access key, private key, ``*_key_id`` …) is a secret unless it is a placeholder or not a literal.
In structured configuration files (JSON, YAML, TOML, INI, ``.env``, properties, credential files)
the weaker names ``auth``/``authorization`` and ``*_key_id`` count as credential names too; in source
code their value must also look random (entropy is a tie-breaker there, never the sole rule).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import PurePosixPath

from codex_core.secrets._spans import REDACTED_PREFIX, Spans

# --------------------------------------------------------------------------- assignments

# Every secret-looking name contains one of these (found with str.find on the lower-cased text:
# several times faster than any regex scan, which matters on megabyte files with no secrets).
_KEYWORDS = ("pw", "pass", "secret", "salt", "sig", "seed", "token", "cred", "cookie", "key", "auth", "hmac")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_IDENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$.-")
# After the name: closing quote/bracket of a key, then the operator, or a type annotation and ``=``
# (``password: str = "…"``; ``pass :option:`…``` in reStructuredText is markup, not an assignment).
_QUOTED_AFTER_NAME = re.compile(
    r"[\"'`]?\]?(?:[ \t]*:[ \t]*[A-Za-z_][\w.\[\], |]{0,40}?[ \t]*=|[ \t]*(?P<op>:=|==|!=|=>|\?=|=|:))[ \t]*"
    r"[rRbBuUfF]{0,2}(?:\"(?P<dq>(?:[^\"\\\n]|\\.)*)\"|'(?P<sq>(?:[^'\\\n]|\\.)*)'|`(?P<bq>[^`\n]*)`)"
)
_UNQUOTED_AFTER_NAME = re.compile(r"[\"']?[ \t]*(?::=|\?=|=|:(?=[ \t]))[ \t]*(?P<value>[^\s\"'`][^\n]*)")
# A configuration line's start: indentation, an optional shell/Dockerfile verb or YAML list dash, an
# optional quote, and an optional npm registry scope (``//registry.npmjs.org/:_authToken=…``).
_LINE_START_PREFIX = re.compile(
    r"[ \t]*(?:(?:export|set|setx|ENV|ARG|declare(?:[ \t]+-\w+)?|local|readonly)[ \t]+|-[ \t]+)?[\"']?"
    r"(?://[^\s=]{1,200}:)?"
)
_MAX_PREFIX = 256
_TRAILING_COMMENT = re.compile(r"[ \t]+#.*$")
_XML_SECRET = re.compile(
    r"<(?P<tag>[\w.:-]*(?i:password|passwd|secret|token|api[_-]?key|apikey)[\w.:-]*)>(?P<value>[^<\n]{1,500})</(?P=tag)>"
)
# The name in an attribute: <property name="db.password">v</property>, <add key="ApiKey" value="v"/>,
# <param name="token" value="v"/> (Hibernate, Spring, .NET app.config, Ant, Maven settings).
_XML_NAMED_VALUE = re.compile(
    r"<[\w:.-]+\s[^>\n]*?\b(?:name|key)\s*=\s*[\"'](?P<name>[^\"'\n]{1,100})[\"'][^>\n]*?"
    r"\bvalue\s*=\s*(?P<q>[\"'])(?P<value>(?:(?!(?P=q))[^\n]){1,500})(?P=q)"
)
_XML_NAMED_TEXT = re.compile(
    r"<(?P<tag>[\w:.-]+)\s[^>\n]*?\b(?:name|key)\s*=\s*[\"'](?P<name>[^\"'\n]{1,100})[\"'][^>\n]*>"
    r"(?P<value>[^<\n]{1,500})</(?P=tag)>"
)
# A name and its value as the first two string arguments of a call: define('DB_PASSWORD', '…') in PHP,
# os.environ.setdefault("API_TOKEN", "…"), System.setProperty("db.password", "…"), config.set(…).
_CALL_NAMES = ("define(", "setenv(", "putenv(", "setdefault(", "setproperty(", "set(", "put(")
_NAMED_CALL = re.compile(
    r"(?i:define|setenv|putenv|setdefault|setproperty|set|put)\([ \t]*(?P<q1>[\"'])(?P<name>[\w.\-]{2,100})(?P=q1)"
    r"[ \t]*,[ \t]*(?P<q>[\"'])(?P<value>(?:(?!(?P=q))[^\n\\]|\\.){1,500})(?P=q)"
)

_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase", "passcode", "pwd", "pass", "pw"})
_STRONG_WORDS = frozenset({"secret", "token", "credential", "credentials", "apikey", "creds", "cred"})
_STRONG_PAIRS = frozenset({
    ("api", "key"), ("access", "key"), ("private", "key"), ("auth", "key"), ("signing", "key"),
    ("encryption", "key"), ("master", "key"), ("session", "key"), ("account", "key"), ("app", "secret"),
})
# Words fused into one segment of an all-lowercase key (``identitytoken``, ``apikey``).
_FUSED_STRONG = ("token", "apikey", "credential", "credentials")
# Weak names that hold a credential in a configuration file (Docker's and npm's ``auth``).
_STRUCTURED_STRONG = frozenset({"auth", "authorization"})
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
    "total", "forgot", "reset", "bypass", "with",
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
    # GitHub Actions permission levels (``id-token: write``) and other access modes
    "read", "write", "read-all", "write-all", "inherit", "readonly", "read-only", "readwrite", "read-write",
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


# Configuration and credential files: here a value under ``auth`` or ``*_key_id`` is a credential.
_STRUCTURED_SUFFIXES = frozenset({
    ".json", ".jsonc", ".json5", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".cnf", ".env", ".properties",
    ".tfvars", ".tfstate", ".hcl", ".plist", ".xml", ".config", ".npmrc", ".pypirc", ".netrc", ".dockercfg",
    ".yarnrc", ".gemrc", ".pgpass", ".htpasswd", ".backup",
})
_STRUCTURED_NAMES = frozenset({
    ".env", ".npmrc", ".pypirc", ".netrc", "_netrc", ".dockercfg", ".git-credentials", ".yarnrc", ".yarnrc.yml",
    ".gemrc", ".pgpass", "credentials", "config", ".htpasswd", ".s3cfg", ".boto", ".condarc", ".pip.conf",
    "pip.conf", "pip.ini", "nuget.config",
})


def is_code_path(path: str | None) -> bool:
    return path is not None and PurePosixPath(path).suffix.lower() in _CODE_SUFFIXES


def is_structured_path(path: str | None) -> bool:
    if path is None:
        return False
    name = PurePosixPath(path).name.lower()
    return (name in _STRUCTURED_NAMES or name.startswith(".env") or PurePosixPath(name).suffix in _STRUCTURED_SUFFIXES)


def _name_segments(name: str) -> list[str]:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return [s for s in re.split(r"[^A-Za-z0-9]+", name.lower()) if s]


@lru_cache(maxsize=8192)
def classify_name(name: str, structured: bool = False) -> str | None:
    """``password`` / ``assigned_secret`` (any literal is secret), ``high_entropy_secret`` (only a
    random-looking literal is), or None (not a secret name). ``structured``: the name is a key of a
    configuration or credential file, where ``auth`` and ``*_key_id`` hold credentials."""
    segments = _name_segments(name)
    if (segments[-2:] == ["key", "id"] or segments[-1:] == ["keyid"]) and "public" not in segments:
        # private_key_id, aws_access_key_id, signing_key_id: an id that names a key is issued with it
        return "assigned_secret" if structured else "high_entropy_secret"
    if not segments or segments[-1] in _EXCLUDED_LAST or segments[0] in _EXCLUDED_FIRST:
        return None
    if segments in (["pwd"], ["oldpwd"]):
        return None  # the shell's working directory
    last = segments[-1]
    if any(s in _PASSWORD_WORDS and (s not in _LAST_ONLY or s == last) for s in segments):
        return "password"
    if any(("password" in s or "passwd" in s) for s in segments):
        return "password"  # dbpassword, adminpasswd
    pairs = zip(segments, segments[1:], strict=False)
    if any(s in _STRONG_WORDS for s in segments) or any(pair in _STRONG_PAIRS for pair in pairs):
        return "assigned_secret"
    if any(s.endswith(_FUSED_STRONG) or ("secret" in s and s != "secrets") for s in segments):
        return "assigned_secret"  # authtoken, identitytoken, clientsecret, secretkey
    if last in _WEAK_LAST:
        return "assigned_secret" if structured and last in _STRUCTURED_STRONG else "high_entropy_secret"
    return None


def is_placeholder(value: str, name: str = "") -> bool:
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


def looks_random(value: str) -> bool:
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
    return not is_placeholder(value.rstrip(";,"), name)


# --------------------------------------------------------------------------- detection


def lower(text: str) -> str:
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



def find_assignments(text: str, lowered: str, spans: Spans, *, code: bool, structured: bool = False) -> None:
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
        kind = classify_name(name.lstrip("$-."), structured)
        if kind is None:
            continue
        quoted = _QUOTED_AFTER_NAME.match(text, end)
        if quoted is not None:
            group = next(g for g in ("dq", "sq", "bq") if quoted.group(g) is not None)
            value = quoted.group(group)
            if quoted.group("op") in ("==", "!=") and _BARE_WORD.fullmatch(value):
                continue  # a lexer's `token == "return"`, not a hard-coded credential
            if value_is_secret(value, name, kind, code=code):
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
        if value and _unquoted_is_literal(value, name) and value_is_secret(value, name, kind):
            spans.add(unquoted.start("value"), unquoted.start("value") + len(value), kind)


def value_is_secret(value: str, name: str, kind: str, *, code: bool = False) -> bool:
    if kind == "high_entropy_secret":
        return looks_random(value) and REDACTED_PREFIX not in value
    if kind != "password":
        stripped = value.strip()
        if _NUMBER.fullmatch(stripped):
            return False  # "tokens_per_second: 14.2" is a measurement; a numeric password is still a password
        identifier = code and _IDENTIFIER_LIKE.fullmatch(stripped)
        if identifier and (not stripped.isalpha() or stripped.islower() or stripped.isupper()):
            return False  # in source code such a literal is a dictionary key or a label
        if len(stripped.split()) >= 3:
            return False  # prose: help text, error messages
    return not is_placeholder(value, name)


def find_xml(text: str, spans: Spans) -> None:
    for match in _XML_SECRET.finditer(text):
        value = match.group("value")
        kind = classify_name(match.group("tag").split(":")[-1])
        if kind and value_is_secret(value, match.group("tag"), kind):
            spans.add(match.start("value"), match.end("value"), kind)
    for pattern in (_XML_NAMED_VALUE, _XML_NAMED_TEXT):
        for match in pattern.finditer(text):
            name, value = match.group("name"), match.group("value")
            kind = classify_name(name, True)
            if kind and value_is_secret(value, name, kind):
                spans.add(match.start("value"), match.end("value"), kind)


def find_named_calls(text: str, lowered: str, spans: Spans, *, code: bool) -> None:
    """``define('DB_PASSWORD', 'value')`` and its kin: the first argument names the second."""
    for needle in _CALL_NAMES:
        at = lowered.find(needle)
        while at != -1:
            match = _NAMED_CALL.match(text, at)
            if match is not None:
                name, value = match.group("name"), match.group("value")
                kind = classify_name(name)
                if kind and value_is_secret(value, name, kind, code=code):
                    spans.add(match.start("value"), match.end("value"), kind)
            at = lowered.find(needle, at + 1)

