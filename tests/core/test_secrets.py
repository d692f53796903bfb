"""Secret masking: every kind is found and masked, lines never move, plain code is left alone."""

from __future__ import annotations

import time

import pytest

from codex_core.secrets import (
    MASKER_VERSION,
    SECRET_KINDS,
    SecretFinding,
    contains_secret,
    mask_secrets,
    redact,
    redaction,
)

# Assembled from pieces so that this file itself does not look like it leaks credentials.
AWS_ID = "AKIA" + "Z7QW3RT5YU8IOP2A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYzq8Lk2Mn4P"
GITHUB = "ghp_" + "R8nX2mQ4vL7kP9sT3wY6zB1cD5fG0hJ4aE2u"
GITHUB_PAT = "github_pat_" + "11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE = "AIza" + "SyD3x8Kq2mN7pL4vR9sT1wY6zB0cF5gH2jE"
STRIPE = "sk_live_" + "51H8xQ2eZvKYlo2C9mN3pQ7r"
OPENAI = "sk-proj-" + "T3BlbkFJ4x9Qm2Lp7Vz8Rk1Ws6Yd"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM_BODY = [
    "MIIEowIBAAKCAQEAx4UbaDzY3kQ9v0LmPq7RtWz2XcVbNn8MqKjH5gFdSaPo",
    "Ui8YtReWq1ZxCvBnMl0KjHgFdSa2PoIuYtReWq3ZxCvBnMl4KjHgFdSaPoI",
    "u9YtReWq==",
]
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END RSA PRIVATE KEY-----"


def masked(text: str, **kwargs) -> str:
    return mask_secrets(text, **kwargs)[0]


def kinds(text: str, **kwargs) -> set[str]:
    return {f.kind for f in mask_secrets(text, **kwargs)[1]}


@pytest.mark.parametrize(
    ("kind", "line", "secret"),
    [
        ("aws_access_key", f"aws_access_key_id = {AWS_ID}", AWS_ID),
        ("aws_secret_key", f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET),
        ("aws_secret_key", f'{{"SecretAccessKey": "{AWS_SECRET}"}}', AWS_SECRET),
        ("github_token", f"export GH={GITHUB}", GITHUB),
        ("github_token", f"client = Github('{GITHUB_PAT}')", GITHUB_PAT),
        ("slack_token", f'SLACK = "{SLACK}"', SLACK),
        ("slack_webhook", "hook = 'https://hooks.slack.com/services/T0AB12CD3/B0AB12CD3/x9Yz8Wv7Ut6Sr5Qp'",
         "T0AB12CD3/B0AB12CD3/x9Yz8Wv7Ut6Sr5Qp"),
        ("google_api_key", f"maps.init('{GOOGLE}')", GOOGLE),
        ("stripe_key", f"stripe.api_key = '{STRIPE}'", STRIPE),
        ("openai_key", f"client = OpenAI(api_key=os.getenv('K', '{OPENAI}'))", OPENAI),
        ("jwt", f"curl -H 'X-Session: {JWT}' localhost", JWT),
        ("auth_header", 'headers = {"Authorization": "Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0"}',
         "9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
        ("url_credentials", 'DATABASE_URL = "postgres://app:Sup3rS3cret!@db.internal:5432/app"', "Sup3rS3cret!"),
        ("password", 'db.connect(host="db", password="correct-horse-42")', "correct-horse-42"),
        ("password", "DB_PASSWORD=hunter2hunter2", "hunter2hunter2"),
        ("password", "  passwd: s3cr3t-Pa55", "s3cr3t-Pa55"),
        ("password", '$db_pass = "tr0ub4dor&3";', "tr0ub4dor&3"),
        ("password", "<password>xK9#mQ2!vL</password>", "xK9#mQ2!vL"),
        ("assigned_secret", 'SECRET_KEY = "django-insecure-7f#k2$9x!q"', "django-insecure-7f#k2$9x!q"),
        ("assigned_secret", '"client_secret": "0a1b2c3d4e5f",', "0a1b2c3d4e5f"),
        ("assigned_secret", "spring.datasource.api-key=Zq8Wv4Xr2Ty6", "Zq8Wv4Xr2Ty6"),
        ("assigned_secret", "ENV APP_TOKEN=Zq8Wv4Xr2Ty6Uo0", "Zq8Wv4Xr2Ty6Uo0"),
        ("high_entropy_secret", 'HMAC_KEY = "a8f5f167f44f4964e6c998dee827110c"', "a8f5f167f44f4964e6c998dee827110c"),
        ("high_entropy_secret", "salt: Qm9vYmFyQmF6MTIzNDU2Nzg5MA9z", "Qm9vYmFyQmF6MTIzNDU2Nzg5MA9z"),
    ],
)
def test_each_kind_is_found_and_masked_in_place(kind: str, line: str, secret: str) -> None:
    text = f"first line\n{line}\nlast line\n"
    out, findings = mask_secrets(text)
    assert secret not in out
    assert redaction(kind) in out
    assert out.count("\n") == text.count("\n")
    assert out.split("\n")[0] == "first line" and out.split("\n")[2] == "last line"
    (finding,) = [f for f in findings if f.kind == kind]
    assert finding.line == 2
    # The finding points at the secret in the original text (and holds nothing else).
    assert secret in line[finding.start_col : finding.end_col]


def test_the_original_kinds_are_told_apart_in_one_text() -> None:
    # Every rule has a sample of its own in test_secret_rules.py; here the first fourteen share a text.
    samples = "\n".join([
        PEM, AWS_ID, f"aws_secret_access_key={AWS_SECRET}", GITHUB, SLACK, GOOGLE, STRIPE, OPENAI, JWT,
        "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0", "redis://u:pa55w0rd@cache:6379",
        'password = "p4ssw0rd!"', 'api_token = "t0k3n-v4lue"', 'SIGNATURE = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"',
    ])
    assert kinds(samples) == {
        "private_key", "aws_access_key", "aws_secret_key", "github_token", "slack_token", "google_api_key",
        "stripe_key", "openai_key", "jwt", "auth_header", "url_credentials", "password", "assigned_secret",
        "high_entropy_secret",
    } <= set(SECRET_KINDS)


def test_private_key_body_is_masked_line_by_line_and_markers_stay() -> None:
    text = f'KEY = """{PEM}"""\nprint(KEY)\n'
    out, findings = mask_secrets(text)
    lines = out.split("\n")
    assert lines[0] == 'KEY = """-----BEGIN RSA PRIVATE KEY-----'
    assert lines[1:4] == [redaction("private_key")] * 3
    assert lines[4] == '-----END RSA PRIVATE KEY-----"""'
    assert lines[5] == "print(KEY)"
    assert [(f.kind, f.line) for f in findings] == [("private_key", 2), ("private_key", 3), ("private_key", 4)]
    assert not any(part in out for part in PEM_BODY)


@pytest.mark.parametrize(
    "header",
    ["EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "PGP PRIVATE KEY BLOCK"],
)
def test_private_key_variants_in_code_yaml_and_json(header: str) -> None:
    body = PEM_BODY[:2]
    concatenated = "\n".join(
        ["key = (", f'    "-----BEGIN {header}-----\\n"', *(f'    "{b}\\n"' for b in body),
         f'    "-----END {header}-----\\n"', ")"]
    )
    yaml = "\n".join(["tls:", "  key: |", f"    -----BEGIN {header}-----", *(f"    {b}" for b in body),
                      f"    -----END {header}-----", "  port: 443"])
    escaped = "\\n".join(body)
    one_line = f'{{"private_key": "-----BEGIN {header}-----\\n{escaped}\\n-----END {header}-----\\n"}}'
    for text in (concatenated, yaml, one_line):
        out = masked(text)
        assert not any(b in out for b in body), out
        assert "private_key" in kinds(text)
        assert out.count("\n") == text.count("\n")
    assert masked(yaml).split("\n")[-1] == "  port: 443"


def test_one_line_key_keeps_its_markers_when_its_name_is_not_secret() -> None:
    body = "\\n".join(PEM_BODY)
    line = f'TEST_PEM = "-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----\\n"'
    out, findings = mask_secrets(line)
    assert out == f'TEST_PEM = "-----BEGIN PRIVATE KEY-----{redaction("private_key")}-----END PRIVATE KEY-----\\n"'
    assert [f.kind for f in findings] == ["private_key"]


def test_pem_markers_in_parser_code_are_not_a_key() -> None:
    code = (
        'BEGIN = "-----BEGIN RSA PRIVATE KEY-----"\n'
        'END = "-----END RSA PRIVATE KEY-----"\n'
        "def is_key(line):\n"
        '    if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):\n'
        "        return True\n"
        "    return False\n"
    )
    assert mask_secrets(code) == (code, [])
    certificate = "-----BEGIN CERTIFICATE-----\n" + PEM_BODY[0] + "\n-----END CERTIFICATE-----\n"
    assert mask_secrets(certificate) == (certificate, [])


def test_unterminated_key_masks_only_what_is_clearly_key_material() -> None:
    text = "-----BEGIN RSA PRIVATE KEY-----\n" + PEM_BODY[0] + "\nabc\n...truncated\n"
    out = masked(text)
    assert PEM_BODY[0] not in out
    assert out.split("\n")[2:] == ["abc", "...truncated", ""]


@pytest.mark.parametrize(
    "line",
    [
        'password = os.environ["DB_PASSWORD"]',
        "password = os.environ.get('DB_PASSWORD')",
        "token = get_token()",
        "api_key = settings.API_KEY",
        "password: str",
        "password: Optional[str] = None",
        "def login(user, password=password):",
        "self.password = password",
        'token = "changeme"',
        'api_key = "<your-api-key>"',
        'password = "xxxx"',
        'password = "********"',
        'secret: "${APP_SECRET}"',
        "password: {{ vault_db_password }}",
        "password = %(db_password)s",
        'password = ""',
        'token_url = "https://oauth2.googleapis.com/token"',
        "max_tokens = 4096",
        "password_min_length = 12",
        'PASSWORD_FIELD = "password"',
        'error = "invalid password"',
        'label = "Enter your API key"',
        'cache_key = "user_profile_v2_cache"',
        'commit = "a8f5f167f44f4964e6c998dee827110c"',
        'if token == "return":',
        "tokenizer = AutoTokenizer.from_pretrained(name)",
        "for key, value in items.items():",
        "PWD=/home/user/project",
        "pass_through: true",
        "password: null",
        "auth = HTTPBasicAuth(user, pw)",
        "ssh://git@github.com/org/repo.git",
        "see https://user:${PASSWORD}@example.com for the format",
    ],
)
def test_false_positive_guards(line: str) -> None:
    assert mask_secrets(line) == (line, []), masked(line)


@pytest.mark.parametrize(
    "line",
    [
        'INPUT_TOKEN_KEY = "gen_ai.usage.input_tokens"',
        '_ENV_HEALTHCARE_SECRET = "HEALTHCARE_SECRET"',
        "    ...     api_key=\"hf_...\",  # Pass your HF token",
        'For simple API keys: {"api_key": "sk-xxx"}',
        'app = WebhooksServer(webhook_secret="my_secret")',
        'secrets={"MY_SECRET_KEY": "secret_value"}',
        'self.sas_token = f"?{sas_token}"',
        "FillMaskOutputElement(score=0.06, token=45075, token_str=' immortality')",
        '"--token": "Use a User Access Token. Prefer setting `HF_TOKEN` instead.",',
        "# cached token: `get_token()` may refresh an OAuth token",
        'assert url.password == "a secret"',
        'prompt_per_token_ms = 1.320',
    ],
)
def test_false_positive_guards_in_source_code(line: str) -> None:
    """Lines seen in real libraries (huggingface_hub, mlflow, httpx): labels, docs and stand-ins."""
    assert mask_secrets(line, path="lib/module.py") == (line, []), masked(line, path="lib/module.py")


def test_unquoted_values_are_configuration_only_outside_source_files() -> None:
    line = "token = session_value"
    assert masked(line, path="app/auth.py") == line  # a variable reference in code
    assert masked(line, path=".env") == f"token = {redaction('assigned_secret')}"
    assert masked(line) == f"token = {redaction('assigned_secret')}"  # unknown: assume configuration
    # Quoted literals are secrets in code too.
    assert masked('token = "Zq8Wv4Xr2Ty6"', path="app/auth.py") == f'token = "{redaction("assigned_secret")}"'


def test_line_count_and_untouched_lines_are_preserved_including_crlf() -> None:
    text = "a = 1\r\npassword = hunter2hunter2\r\n" + PEM.replace("\n", "\r\n") + "\r\nb = 2\r\n\r\n"
    out = masked(text)
    assert out.count("\n") == text.count("\n")
    assert out.count("\r") == text.count("\r")
    original, after = text.split("\n"), out.split("\n")
    assert len(original) == len(after)
    for before_line, after_line in zip(original, after, strict=True):
        if "hunter2" not in before_line and not any(b in before_line for b in PEM_BODY):
            assert before_line == after_line


def test_masking_is_deterministic_and_idempotent() -> None:
    text = CONFIG_YAML + PYTHON_MODULE + ENV_FILE
    first = mask_secrets(text)
    assert mask_secrets(text) == first
    assert mask_secrets(first[0]) == (first[0], [])


def test_findings_never_contain_the_secret() -> None:
    text = CONFIG_YAML + PYTHON_MODULE + ENV_FILE
    out, findings = mask_secrets(text)
    assert findings
    dumped = repr(findings) + str([vars(f) if hasattr(f, "__dict__") else f for f in findings])
    for secret in ALL_SECRETS:
        assert secret not in dumped
        assert secret not in out
    assert all(isinstance(f, SecretFinding) and f.kind in SECRET_KINDS for f in findings)
    assert all(isinstance(v, int) for f in findings for v in (f.line, f.start_col, f.end_col))


CONFIG_YAML = f"""\
# docker-compose style configuration
services:
  db:
    image: postgres:16
    environment:
      - POSTGRES_USER=app
      - POSTGRES_PASSWORD=pg-Adm1n-2024!
  api:
    environment:
      DATABASE_URL: postgres://app:pg-Adm1n-2024!@db:5432/app
      AWS_ACCESS_KEY_ID: {AWS_ID}
      AWS_SECRET_ACCESS_KEY: {AWS_SECRET}
      SLACK_BOT_TOKEN: "{SLACK}"
      LOG_LEVEL: info
      password_file: /run/secrets/db_password
"""

PYTHON_MODULE = f'''\
"""Deployment helpers (with the mistakes people really make)."""

import os

GITHUB_TOKEN = "{GITHUB}"
STRIPE_KEY = os.environ.get("STRIPE_KEY", "{STRIPE}")


def connect():
    password = os.environ["DB_PASSWORD"]
    return db.connect(user="app", password="fallback-Pa55w0rd")


def sign(payload):
    token = "{JWT}"
    return hmac.new(token.encode(), payload, "sha256").hexdigest()
'''

ENV_FILE = """\
API_KEY=9c1e4b7a2f6d8e3c
export SESSION_SECRET='k3yb0ard-c4t-2024'
DEBUG=true
"""

ALL_SECRETS = [
    "pg-Adm1n-2024!", AWS_ID, AWS_SECRET, SLACK, GITHUB, STRIPE, "fallback-Pa55w0rd", JWT, "9c1e4b7a2f6d8e3c",
    "k3yb0ard-c4t-2024",
]


def test_realistic_config_file() -> None:
    out, findings = mask_secrets(CONFIG_YAML, path="docker-compose.yml")
    lines = out.split("\n")
    assert lines[6] == f"      - POSTGRES_PASSWORD={redaction('password')}"
    assert lines[9] == f"      DATABASE_URL: postgres://app:{redaction('url_credentials')}@db:5432/app"
    assert lines[10] == f"      AWS_ACCESS_KEY_ID: {redaction('aws_access_key')}"
    assert lines[11] == f"      AWS_SECRET_ACCESS_KEY: {redaction('aws_secret_key')}"
    assert lines[12] == f'      SLACK_BOT_TOKEN: "{redaction("slack_token")}"'
    assert lines[13] == "      LOG_LEVEL: info"
    assert lines[14] == "      password_file: /run/secrets/db_password"
    assert [f.line for f in findings] == [7, 10, 11, 12, 13]


def test_realistic_python_module() -> None:
    out, findings = mask_secrets(PYTHON_MODULE, path="deploy/helpers.py")
    lines = out.split("\n")
    assert lines[4] == f'GITHUB_TOKEN = "{redaction("github_token")}"'
    assert lines[5] == f'STRIPE_KEY = os.environ.get("STRIPE_KEY", "{redaction("stripe_key")}")'
    assert lines[9] == '    password = os.environ["DB_PASSWORD"]'
    assert lines[10] == f'    return db.connect(user="app", password="{redaction("password")}")'
    assert lines[14] == f'    token = "{redaction("jwt")}"'
    assert [(f.kind, f.line) for f in findings] == [
        ("github_token", 5), ("stripe_key", 6), ("password", 11), ("jwt", 15)
    ]
    for finding in findings:  # columns address the original line
        original = PYTHON_MODULE.split("\n")[finding.line - 1]
        assert original[finding.start_col : finding.end_col] in ALL_SECRETS


def test_env_file_and_helpers() -> None:
    out = redact(ENV_FILE, path=".env")
    assert out.split("\n")[:3] == [
        f"API_KEY={redaction('assigned_secret')}",
        f"export SESSION_SECRET='{redaction('assigned_secret')}'",
        "DEBUG=true",
    ]
    assert contains_secret(ENV_FILE) and not contains_secret("DEBUG=true\nLOG_LEVEL=info\n")
    assert isinstance(MASKER_VERSION, int)


def test_a_one_mebibyte_file_is_fast() -> None:
    block = PYTHON_MODULE + CONFIG_YAML + "def f(key, token):\n    return key[token]\n" * 20
    text = (block * (2**20 // len(block) + 1))[: 2**20]
    started = time.perf_counter()
    out, findings = mask_secrets(text, path="big.py")
    assert time.perf_counter() - started < 2.0
    assert out.count("\n") == text.count("\n") and findings


@pytest.mark.parametrize(
    "text",
    ["key " * 50_000, "password=" * 20_000, 'password = "' * 20_000, "A" * 500_000, "\n" * 200_000,
     "http://a:b@" * 20_000, "-----BEGIN PRIVATE KEY-----\n" * 5_000],
)
def test_pathological_inputs_stay_linear(text: str) -> None:
    started = time.perf_counter()
    out, _ = mask_secrets(text)
    assert time.perf_counter() - started < 2.0
    assert out.count("\n") == text.count("\n")
