# ruff: noqa: E501  (sample files keep their real long lines: connection strings, signed URLs, keys)
"""A generated corpus of secrets in the files where they really occur, and of ordinary look-alikes.

``build_secret_corpus(seed)`` returns one or more realistic samples per rule family of issue #11
(gitleaks' default rules are the yardstick for the token shapes): each sample is a whole small
file (a few lines of ordinary content around the secret) at the path where it would be committed,
plus every secret VALUE in it that must never come back out of the product. Every value is
generated here with ``random.Random(seed)`` in the right alphabet and length; none is real.
Prefixes are assembled from pieces (``"gh" + "p_"``) so that this file does not itself look like
a leak to secret scanners.

``build_benign_corpus(seed)`` returns ordinary files full of secret look-alikes that are NOT
secrets (lockfile integrity hashes, git SHAs, UUIDs, hash test vectors, data-URI images, code
about tokens, placeholders); ``STRICT_BENIGN`` names the classes that must never be masked.

``write_corpus(repo_dir, samples)`` writes the samples at their paths. Every path is chosen so
that ingestion indexes it (see ``codex_core.files._path_reason``: no vendored directory, no lockfile
or generated name, no binary suffix; hidden files are indexed).
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

LOWER = string.ascii_lowercase
UPPER = string.ascii_uppercase
DIGITS = string.digits
HEX = "0123456789abcdef"
ALNUM = string.ascii_letters + DIGITS
LOWER_ALNUM = LOWER + DIGITS
UPPER_ALNUM = UPPER + DIGITS
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
BASE32 = UPPER + "234567"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
PASSWORD_CHARS = ALNUM + "-_.~!*"
WP_SALT_CHARS = ALNUM + "!@#%^&*()-_=+[]|;:,.?~"
DJANGO_CHARS = LOWER + DIGITS + "!@#%^&*(-_=+)"

# Random values that contain one of these would read as placeholders ("xxx", "example", ...):
# a generated secret must be unmistakably a secret, so such draws are rejected.
_PLACEHOLDER_LIKE = ("xxx", "example", "test", "fake", "dummy", "sample", "redact", "change", "placeholder",
                     "todo", "your", "secret", "token", "passw")


@dataclass(frozen=True, repr=False)
class Sample:
    family: str
    rule: str
    path: str
    text: str
    secrets: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.family}/{self.rule}"

    def __repr__(self) -> str:
        # pytest prints test arguments in tracebacks: never the text or a whole secret.
        previews = ", ".join(f"{s[:4]}…" for s in self.secrets)
        return f"Sample({self.id}, {self.path!r}, secrets=[{previews}])"


def _p(*parts: str) -> str:
    """A prefix assembled from pieces, so this file holds no literal token prefix."""
    return "".join(parts)


class _Rand:
    """Random values in a given alphabet; every value is unique within one corpus."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.issued: set[str] = set()

    def chars(self, alphabet: str, n: int) -> str:
        mixed = any(c.isdigit() for c in alphabet) and any(c.isalpha() for c in alphabet)
        for _ in range(10_000):
            value = "".join(self.rng.choice(alphabet) for _ in range(n))
            if value in self.issued:
                continue
            if mixed and n >= 8 and (sum(c.isdigit() for c in value) < 2 or sum(c.isalpha() for c in value) < 2):
                continue
            lowered = value.lower()
            if any(word in lowered for word in _PLACEHOLDER_LIKE) or re.search(r"(.)\1\1", value):
                continue
            self.issued.add(value)
            return value
        raise RuntimeError(f"cannot draw a value of {n} characters from {alphabet!r}")

    def hex(self, n: int) -> str:
        return self.chars(HEX, n)

    def alnum(self, n: int) -> str:
        return self.chars(ALNUM, n)

    def digits(self, n: int) -> str:
        return str(self.rng.randint(1, 9)) + self.chars(DIGITS, n - 1)

    def uuid(self) -> str:
        h = self.hex(32)
        variant = self.rng.choice("89ab")
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"

    def password(self, n: int = 18) -> str:
        for _ in range(1000):
            value = self.chars(PASSWORD_CHARS, n)
            if any(c in "-_.~!*" for c in value[1:-1]) and value[0].isalnum() and value[-1].isalnum():
                return value
        raise RuntimeError("cannot draw a password")

    def bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def b64_bytes(self, n: int) -> str:
        """base64 (with padding) of ``n`` random bytes."""
        for _ in range(1000):
            value = base64.b64encode(self.bytes(n)).decode()
            if value not in self.issued and not any(w in value.lower() for w in _PLACEHOLDER_LIKE):
                self.issued.add(value)
                return value
        raise RuntimeError("cannot draw base64")


def _b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _b64url_nopad(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _sample(family: str, rule: str, path: str, text: str, *secrets: str) -> Sample:
    for secret in secrets:
        if secret not in text:
            raise AssertionError(f"{family}/{rule}: a listed secret ({secret[:4]}...) is not in its file")
        if len(secret) < 8:
            raise AssertionError(f"{family}/{rule}: secret {secret[:4]}... is too short to be searched for")
    if not secrets:
        raise AssertionError(f"{family}/{rule}: a sample without a secret proves nothing")
    return Sample(family, rule, path, text, tuple(dict.fromkeys(secrets)))


# --------------------------------------------------------------------------- key material

_BEGIN, _END, _PK = "-----BEGIN ", "-----END ", "PRIVATE" + " KEY"


def _armor(label: str) -> tuple[str, str]:
    return f"{_BEGIN}{label}-----", f"{_END}{label}-----"


@dataclass(frozen=True)
class _Key:
    lines: list[str]  # body lines
    secret_lines: list[str]  # those that carry random key material


def _key_body(r: _Rand, prefix: bytes, random_bytes: int, width: int = 64) -> _Key:
    """base64 of a fixed DER/packet prefix plus random bytes, wrapped like the real thing. Lines
    made only of the fixed prefix (identical in every key of that type) are not counted as secret."""
    body = base64.b64encode(prefix + r.bytes(random_bytes)).decode()
    lines = [body[i : i + width] for i in range(0, len(body), width)]
    fixed = len(prefix) * 4 // 3
    secret_lines = [line for i, line in enumerate(lines) if (i + 1) * width > fixed and len(line) >= 16]
    return _Key(lines, secret_lines)


_RSA_PKCS1 = bytes.fromhex("308204a40201000282010100")
_RSA_1024 = bytes.fromhex("3082025c02010002818100")
_PKCS8 = bytes.fromhex("308204be020100300d06092a864886f70d0101010500048204a8")
_EC = bytes.fromhex("30770201010420")
_DSA = bytes.fromhex("308201bb02010002818100")
_ENCRYPTED_PKCS8 = bytes.fromhex("3082052e305806092a864886f70d01050d304b302a06092a864886f70d01050c301d0408")
_OPENSSH_ED25519 = (
    b"openssh-key-v1\0" + b"\0\0\0\x04none" * 2 + b"\0\0\0\0" + b"\0\0\0\x01" + b"\0\0\0\x33"
    + b"\0\0\0\x0bssh-ed25519" + b"\0\0\0\x20"
)
_PGP_SECRET_KEY = bytes.fromhex("950398040000")


def _pem(r: _Rand, label: str, prefix: bytes, random_bytes: int) -> tuple[str, _Key]:
    begin, end = _armor(label)
    key = _key_body(r, prefix, random_bytes)
    return "\n".join([begin, *key.lines, end]), key


# --------------------------------------------------------------------------- token shapes


def _jwt(r: _Rand, claims: dict) -> tuple[str, str]:
    header = _b64url_nopad(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")))
    payload = _b64url_nopad(json.dumps(claims, separators=(",", ":")))
    signature = r.chars(B64URL, 43)
    return f"{header}.{payload}.{signature}", signature


# --------------------------------------------------------------------------- families


def _cloud(r: _Rand) -> list[Sample]:
    akia, asia = _p("AK", "IA") + r.chars(BASE32, 16), _p("AS", "IA") + r.chars(BASE32, 16)
    aws_secret, aws_secret2 = r.chars(B64, 40), r.chars(B64, 40)
    session = _p("IQoJb3JpZ2luX2Vj") + r.chars(B64, 300)
    akia2, aws_secret3 = _p("AK", "IA") + r.chars(BASE32, 16), r.chars(B64, 40)
    absk = _p("AB", "SK") + _b64(b"BedrockAPIKey-" + r.alnum(4).encode() + b"-at-" + r.digits(12).encode()
                                 + b":" + r.alnum(64).encode())
    aiza = _p("AI", "za") + "Sy" + r.chars(B64URL, 33)
    sa_key_id = r.hex(40)
    sa_pem, sa_key = _pem(r, _PK, _PKCS8, 1100)
    service_account = {
        "type": "service_account",
        "project_id": "acme-prod-4821",
        "private_key_id": sa_key_id,
        "private_key": sa_pem + "\n",
        "client_email": "ingest@acme-prod-4821.iam.gserviceaccount.com",
        "client_id": r.digits(21),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                "ingest%40acme-prod-4821.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com",
    }

    def azure_secret() -> str:
        return r.chars(ALNUM + "_~.", 3) + str(r.rng.randint(0, 9)) + "Q~" + r.chars(ALNUM + "_~.-", 34)

    az_secret, az_secret2 = azure_secret(), azure_secret()
    account_key = r.b64_bytes(64)
    sas_sig = r.b64_bytes(32).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    ltai, ali_secret = _p("LT", "AI") + r.chars(ALNUM, 20), r.chars(ALNUM, 30)
    dop = _p("dop", "_v1_") + r.hex(64)
    heroku = r.uuid()
    cf_token = r.chars(B64URL, 40)
    dapi1, dapi2 = _p("da", "pi") + r.hex(32), _p("da", "pi") + r.hex(32) + "-2"
    hvs = _p("hv", "s.") + "CAESI" + r.chars(B64URL, 90)
    atlas = r.chars(LOWER_ALNUM, 14) + _p(".atlas", "v1.") + r.chars(LOWER_ALNUM + "-_", 67)
    doppler = _p("dp.", "pt.") + r.alnum(43)
    pulumi = _p("pul", "-") + r.hex(40)
    pscale_tkn, pscale_pw = _p("pscale", "_tkn_") + r.chars(B64URL, 43), _p("pscale", "_pw_") + r.chars(B64URL, 43)
    return [
        _sample("cloud", "aws_credentials_file", ".aws/credentials", f"""[default]
aws_access_key_id = {akia}
aws_secret_access_key = {aws_secret}
region = eu-west-1

[ci]
aws_access_key_id = {asia}
aws_secret_access_key = {aws_secret2}
aws_session_token = {session}
""", akia, aws_secret, asia, aws_secret2, session),
        _sample("cloud", "aws_keys_in_code", "scripts/upload_backup.py", f'''"""Nightly upload of the database dump to S3."""

import boto3

s3 = boto3.client(
    "s3",
    aws_access_key_id="{akia2}",
    aws_secret_access_key="{aws_secret3}",
    region_name="eu-west-1",
)


def upload(path: str) -> None:
    s3.upload_file(path, "acme-backups", path.rsplit("/", 1)[-1])
''', akia2, aws_secret3),
        _sample("cloud", "aws_bedrock_api_key", "services/summarizer/bedrock.env", f"""# Amazon Bedrock for the summarizer
AWS_REGION=us-east-1
AWS_BEARER_TOKEN_BEDROCK={absk}
BEDROCK_MODEL_ID=anthropic.claude-3-5-sonnet-20240620-v1:0
""", absk),
        _sample("cloud", "gcp_api_key", "web/src/maps.ts", f"""import {{ Loader }} from "@googlemaps/js-api-loader";

const loader = new Loader({{
  apiKey: "{aiza}",
  version: "weekly",
  libraries: ["places"],
}});

export async function loadMaps(): Promise<typeof google.maps> {{
  return loader.load();
}}
""", aiza),
        _sample("cloud", "gcp_service_account_json", "deploy/gcp/service-account.json",
                json.dumps(service_account, indent=2) + "\n", sa_key_id, *sa_key.secret_lines),
        _sample("cloud", "azure_ad_client_secret", "src/Api/appsettings.json", f"""{{
  "Logging": {{
    "LogLevel": {{ "Default": "Information" }}
  }},
  "AzureAd": {{
    "Instance": "https://login.microsoftonline.com/",
    "TenantId": "{r.uuid()}",
    "ClientId": "{r.uuid()}",
    "ClientSecret": "{az_secret}"
  }},
  "AllowedHosts": "*"
}}
""", az_secret),
        _sample("cloud", "azure_ad_client_secret_positional", "src/graph_client.py", f'''from azure.identity import ClientSecretCredential
from msgraph import GraphServiceClient

TENANT = "{r.uuid()}"
APP_ID = "{r.uuid()}"

credential = ClientSecretCredential(TENANT, APP_ID, "{az_secret2}")
graph = GraphServiceClient(credential, scopes=["https://graph.microsoft.com/.default"])
''', az_secret2),
        _sample("cloud", "azure_storage_connection_string", "functions/local.settings.json", f"""{{
  "IsEncrypted": false,
  "Values": {{
    "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=acmeingest;AccountKey={account_key};EndpointSuffix=core.windows.net",
    "FUNCTIONS_WORKER_RUNTIME": "python"
  }}
}}
""", account_key),
        _sample("cloud", "azure_sas_url", "scripts/fetch_model.sh", f"""#!/usr/bin/env bash
set -euo pipefail
# Download the ranker weights from blob storage (read-only SAS, valid until the end of 2026).
MODEL_URL="https://acmemodels.blob.core.windows.net/weights/ranker-v3.onnx?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-12-31T23:59:59Z&st=2025-01-01T00:00:00Z&spr=https&sig={sas_sig}"
curl -fsSL -o models/ranker-v3.onnx "$MODEL_URL"
""", sas_sig),
        _sample("cloud", "alibaba_access_key", "src/main/resources/application-oss.yml", f"""aliyun:
  oss:
    endpoint: https://oss-cn-hangzhou.aliyuncs.com
    bucket: acme-media
    access-key-id: {ltai}
    access-key-secret: {ali_secret}
""", ltai, ali_secret),
        _sample("cloud", "digitalocean_pat", "scripts/deploy_droplet.sh", f"""#!/bin/sh
set -e
doctl auth init --access-token {dop}
doctl compute droplet create web-2 --image ubuntu-24-04-x64 --size s-1vcpu-2gb --region fra1
""", dop),
        _sample("cloud", "heroku_api_key", "scripts/heroku_release.sh", f"""#!/usr/bin/env bash
set -euo pipefail
export HEROKU_API_KEY={heroku}
heroku container:push web --app acme-api
heroku container:release web --app acme-api
""", heroku),
        _sample("cloud", "cloudflare_api_token", "terraform/cloudflare.tf", f"""terraform {{
  required_providers {{
    cloudflare = {{
      source  = "cloudflare/cloudflare"
      version = "~> 4.0"
    }}
  }}
}}

provider "cloudflare" {{
  api_token = "{cf_token}"
}}

resource "cloudflare_record" "www" {{
  zone_id = var.zone_id
  name    = "www"
  value   = "203.0.113.10"
  type    = "A"
  proxied = true
}}
""", cf_token),
        _sample("cloud", "databricks_token", ".databrickscfg", f"""[DEFAULT]
host  = https://adb-{r.digits(16)}.7.azuredatabricks.net
token = {dapi1}

[staging]
host  = https://adb-{r.digits(16)}.11.azuredatabricks.net
token = {dapi2}
""", dapi1, dapi2),
        _sample("cloud", "vault_service_token", "scripts/vault_env.sh", f"""#!/bin/sh
export VAULT_ADDR=https://vault.acme.internal:8200
export VAULT_TOKEN={hvs}
vault kv get -format=json kv/api/prod > /tmp/api.json
""", hvs),
        _sample("cloud", "terraform_cloud_token", ".terraformrc", f"""plugin_cache_dir = "$HOME/.terraform.d/plugin-cache"

credentials "app.terraform.io" {{
  token = "{atlas}"
}}
""", atlas),
        _sample("cloud", "doppler_token", "docker-compose.yml", f"""services:
  api:
    image: ghcr.io/acme/api:1.8.2
    command: doppler run -- ./start.sh
    environment:
      - DOPPLER_TOKEN={doppler}
      - PORT=8080
    ports:
      - "8080:8080"
""", doppler),
        _sample("cloud", "pulumi_token", ".github/workflows/infra.yml", f"""name: infra
on:
  push:
    branches: [main]
jobs:
  preview:
    runs-on: ubuntu-latest
    env:
      PULUMI_ACCESS_TOKEN: {pulumi}
    steps:
      - uses: actions/checkout@v4
      - uses: pulumi/actions@v5
        with:
          command: preview
          stack-name: acme/prod
""", pulumi),
        _sample("cloud", "planetscale_token_and_password", "db/planetscale.env", f"""PLANETSCALE_ORG=acme
PLANETSCALE_SERVICE_TOKEN_ID={r.chars(LOWER_ALNUM, 12)}
PLANETSCALE_SERVICE_TOKEN={pscale_tkn}
DATABASE_URL=mysql://shop_rw:{pscale_pw}@aws.connect.psdb.cloud/shop?sslaccept=strict
""", pscale_tkn, pscale_pw),
    ]


def _vcs_ci(r: _Rand) -> list[Sample]:
    ghp = _p("gh", "p_") + r.alnum(36)
    gho, gh_client_secret = _p("gh", "o_") + r.alnum(36), r.hex(40)
    ghs = _p("gh", "s_") + r.alnum(36)
    pat = _p("github", "_pat_") + r.alnum(22) + "_" + r.alnum(59)
    glpat = _p("gl", "pat-") + r.chars(B64URL, 20)
    glrt = _p("gl", "rt-") + r.chars(B64URL, 20)
    gldt = _p("gl", "dt-") + r.chars(B64URL, 20)
    glptt = _p("gl", "ptt-") + r.hex(40)
    bb_secret = r.chars(LOWER_ALNUM, 64)
    travis, drone = r.alnum(22), r.alnum(32)
    circle = _p("CCI", "PAT_") + r.alnum(22) + "_" + r.hex(40)
    codecov = r.uuid()
    sgp = _p("sg", "p_") + r.hex(16) + "_" + r.hex(40)
    squ = _p("sq", "u_") + r.hex(40)
    return [
        _sample("vcs_ci", "github_pat_classic", "scripts/release.py", f'''import requests

GITHUB_TOKEN = "{ghp}"
API = "https://api.github.com/repos/acme/api/releases"


def create_release(tag: str) -> dict:
    response = requests.post(API, json={{"tag_name": tag}}, headers={{"Authorization": f"token {{GITHUB_TOKEN}}"}})
    response.raise_for_status()
    return response.json()
''', ghp),
        _sample("vcs_ci", "github_oauth_token", "config/oauth.yml", f"""github:
  client_id: Iv1.{r.hex(16)}
  client_secret: {gh_client_secret}
  access_token: {gho}
  scopes: [repo, read:org]
""", gho, gh_client_secret),
        _sample("vcs_ci", "github_app_token_in_url", "Makefile", f""".PHONY: infra-src
infra-src:
\tgit clone https://x-access-token:{ghs}@github.com/acme/infra.git build/infra-src

.PHONY: test
test:
\tpytest -q
""", ghs),
        _sample("vcs_ci", "github_fine_grained_pat", ".github/scripts/sync-labels.js", f"""const {{ Octokit }} = require("@octokit/rest");

const octokit = new Octokit({{ auth: "{pat}" }});

async function syncLabels(owner, repo, labels) {{
  for (const label of labels) {{
    await octokit.issues.createLabel({{ owner, repo, ...label }});
  }}
}}

module.exports = {{ syncLabels }};
""", pat),
        _sample("vcs_ci", "gitlab_pat", ".python-gitlab.cfg", f"""[global]
default = acme
ssl_verify = true

[acme]
url = https://gitlab.acme.io
private_token = {glpat}
api_version = 4
""", glpat),
        _sample("vcs_ci", "gitlab_runner_token", "gitlab-runner/config.toml", f"""concurrent = 4
check_interval = 0

[[runners]]
  name = "docker-runner-1"
  url = "https://gitlab.acme.io/"
  token = "{glrt}"
  executor = "docker"
  [runners.docker]
    image = "alpine:3.20"
    privileged = false
""", glrt),
        _sample("vcs_ci", "gitlab_deploy_token", "deploy/pull-images.sh", f"""#!/bin/sh
set -e
docker login -u gitlab+deploy-token-4821 -p {gldt} registry.gitlab.com
docker pull registry.gitlab.com/acme/api:1.8.2
""", gldt),
        _sample("vcs_ci", "gitlab_pipeline_trigger_token", "ci/trigger-downstream.sh", f"""#!/bin/sh
curl --fail -X POST \\
  -F token={glptt} \\
  -F ref=main \\
  https://gitlab.acme.io/api/v4/projects/42/trigger/pipeline
""", glptt),
        _sample("vcs_ci", "bitbucket_client_secret", "config/bitbucket.properties", f"""bitbucket.workspace=acme
bitbucket.client.id={r.chars(LOWER_ALNUM, 32)}
bitbucket.client.secret={bb_secret}
bitbucket.callback=https://ci.acme.io/oauth/bitbucket
""", bb_secret),
        _sample("vcs_ci", "travis_token", "scripts/travis_trigger.sh", f"""#!/bin/sh
TRAVIS_API_TOKEN="{travis}"
curl -s -X POST \\
  -H "Travis-API-Version: 3" \\
  -H "Authorization: token $TRAVIS_API_TOKEN" \\
  -d '{{"request": {{"branch": "main"}}}}' \\
  https://api.travis-ci.com/repo/acme%2Fapi/requests
""", travis),
        _sample("vcs_ci", "drone_token", "ci/drone.env", f"""DRONE_SERVER=https://drone.acme.io
DRONE_TOKEN={drone}
""", drone),
        _sample("vcs_ci", "circleci_token", "scripts/circleci_rerun.py", f'''import httpx

CIRCLECI_TOKEN = "{circle}"


def rerun(workflow_id: str) -> None:
    httpx.post(
        f"https://circleci.com/api/v2/workflow/{{workflow_id}}/rerun",
        headers={{"Circle-Token": CIRCLECI_TOKEN}},
    ).raise_for_status()
''', circle),
        _sample("vcs_ci", "codecov_token", "codecov.yml", f"""codecov:
  token: {codecov}
  require_ci_to_pass: true
coverage:
  precision: 2
  round: down
""", codecov),
        _sample("vcs_ci", "sourcegraph_token", "tools/src-search.sh", f"""#!/bin/sh
export SRC_ENDPOINT=https://sourcegraph.acme.io
export SRC_ACCESS_TOKEN={sgp}
src search 'repo:^acme/api$ lang:go TODO'
""", sgp),
        _sample("vcs_ci", "sonarqube_token", "sonar-project.properties", f"""sonar.projectKey=acme_api
sonar.organization=acme
sonar.sources=src
sonar.host.url=https://sonarcloud.io
sonar.login={squ}
""", squ),
    ]


def _registries(r: _Rand) -> list[Sample]:
    npm = _p("np", "m_") + r.alnum(36)
    npm_auth = _b64(f"ci-publisher:{r.password()}")
    npm_password = _b64(r.password(20))
    pypi = _p("pypi-", "AgEIcHlwaS5vcmc") + r.chars(B64URL, 150)
    testpypi = _p("pypi-", "AgENdGVzdC5weXBpLm9yZw") + r.chars(B64URL, 150)
    gem = _p("rubygems", "_") + r.hex(48)
    nuget_key = _p("oy", "2") + r.chars(LOWER_ALNUM, 43)
    nuget_pw = r.password(20)
    docker_auth1, docker_auth2 = _b64(f"ci-bot:{r.password()}"), _b64(f"acmeops:{r.password()}")
    dockercfg_auth = _b64(f"deployer:{r.password()}")
    clojars = _p("CLOJARS", "_") + r.chars(LOWER_ALNUM, 60)
    akcp = _p("AK", "Cp") + r.alnum(69)
    reftkn = _p("cmVmd", "GtuOjAxOj") + r.alnum(50)
    docker_config = {"auths": {"registry.acme.io": {"auth": docker_auth1},
                               "https://index.docker.io/v1/": {"auth": docker_auth2}},
                     "credHelpers": {"gcr.io": "gcloud"}}
    dockercfg = {"https://index.docker.io/v1/": {"auth": dockercfg_auth, "email": "deploy@acme.io"}}
    return [
        _sample("registry", "npm_auth_token", ".npmrc", f"""registry=https://registry.npmjs.org/
//registry.npmjs.org/:_authToken={npm}
save-exact=true
""", npm),
        _sample("registry", "npm_legacy_auth", "packages/web/.npmrc", f"""registry=https://npm.acme.io/repository/npm-group/
_auth={npm_auth}
always-auth=true
email=ci@acme.io
""", npm_auth),
        _sample("registry", "npm_scoped_password", "tools/cli/.npmrc", f"""@acme:registry=https://npm.acme.io/repository/npm-private/
//npm.acme.io/repository/npm-private/:username=ci-publisher
//npm.acme.io/repository/npm-private/:_password={npm_password}
//npm.acme.io/repository/npm-private/:email=ci@acme.io
""", npm_password),
        _sample("registry", "pypi_upload_token", ".pypirc", f"""[distutils]
index-servers =
    pypi
    testpypi

[pypi]
username = __token__
password = {pypi}

[testpypi]
repository = https://test.pypi.org/legacy/
username = __token__
password = {testpypi}
""", pypi, testpypi),
        _sample("registry", "rubygems_api_key", ".gem/credentials", f"""---
:rubygems_api_key: {gem}
""", gem),
        _sample("registry", "nuget_api_key", "build/publish.ps1", f"""$ErrorActionPreference = "Stop"
dotnet pack src/Acme.Client -c Release -o out
dotnet nuget push "out/*.nupkg" --api-key {nuget_key} --source https://api.nuget.org/v3/index.json
""", nuget_key),
        _sample("registry", "nuget_config_password", "NuGet.Config", f"""<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="acme" value="https://pkgs.acme.io/nuget/v3/index.json" />
  </packageSources>
  <packageSourceCredentials>
    <acme>
      <add key="Username" value="ci-publisher" />
      <add key="ClearTextPassword" value="{nuget_pw}" />
    </acme>
  </packageSourceCredentials>
</configuration>
""", nuget_pw),
        _sample("registry", "docker_config_auth", "docker/config.json", json.dumps(docker_config, indent=2) + "\n",
                docker_auth1, docker_auth2),
        _sample("registry", "dockercfg_auth", ".dockercfg", json.dumps(dockercfg, indent=2) + "\n", dockercfg_auth),
        _sample("registry", "clojars_token", "profiles.clj", f"""{{:user {{:plugins [[lein-ancient "1.0.0-RC3"]]}}
 :auth {{:repository-auth {{#"clojars" {{:username "acme-ci"
                                      :password "{clojars}"}}}}}}}}
""", clojars),
        _sample("registry", "artifactory_api_key", "gradle.properties", f"""org.gradle.jvmargs=-Xmx2g
artifactory_contextUrl=https://acme.jfrog.io/artifactory
artifactory_user=ci-publisher
artifactory_password={akcp}
""", akcp),
        _sample("registry", "jfrog_reference_token", "build/maven-settings.xml", f"""<settings>
  <servers>
    <server>
      <id>acme-releases</id>
      <username>ci-publisher</username>
      <password>{reftkn}</password>
    </server>
  </servers>
</settings>
""", reftkn),
    ]


def _chat(r: _Rand) -> list[Sample]:
    xoxb = _p("xo", "xb-") + r.digits(12) + "-" + r.digits(13) + "-" + r.alnum(24)
    xoxp = _p("xo", "xp-") + "-".join([r.digits(12), r.digits(12), r.digits(13), r.hex(32)])
    xapp = _p("xa", "pp-") + "1-A0" + r.chars(UPPER_ALNUM, 9) + "-" + r.digits(13) + "-" + r.hex(64)
    slack_signing = r.hex(32)
    hook_secret = r.alnum(24)
    hook = _p("https://hooks.", "slack.com/services/") + "T" + r.chars(UPPER_ALNUM, 8) + "/B" + \
        r.chars(UPPER_ALNUM, 10) + "/" + hook_secret
    discord_hook_token = r.chars(B64URL, 68)
    bot_id = _b64url_nopad(r.digits(19))
    discord_bot = bot_id + "." + r.chars(B64URL, 6) + "." + r.chars(B64URL, 38)
    teams_id, teams_v2 = r.hex(32), "V2" + r.chars(B64URL, 45)
    teams_url = (_p("https://acme.webhook.", "office.com/webhookb2/") + f"{r.uuid()}@{r.uuid()}/IncomingWebhook/"
                 f"{teams_id}/{r.uuid()}/{teams_v2}")
    telegram = r.digits(10) + ":AA" + r.chars(B64URL, 33)
    twilio_sk, twilio_secret = _p("S", "K") + r.hex(32), r.alnum(32)
    sendgrid = _p("S", "G.") + r.chars(B64URL, 22) + "." + r.chars(B64URL, 43)
    mailgun = _p("ke", "y-") + r.hex(32)
    mailchimp = r.hex(32) + "-us12"
    brevo = _p("xkey", "sib-") + r.hex(64) + "-" + r.alnum(16)
    return [
        _sample("chat", "slack_bot_token", "bots/slack_bot.py", f'''from slack_sdk import WebClient

SLACK_BOT_TOKEN = "{xoxb}"
client = WebClient(token=SLACK_BOT_TOKEN)


def post(channel: str, text: str) -> None:
    client.chat_postMessage(channel=channel, text=text)
''', xoxb),
        _sample("chat", "slack_user_token", "scripts/export_channel.sh", f"""#!/bin/sh
curl -s -H "Authorization: Bearer {xoxp}" \\
  "https://slack.com/api/conversations.history?channel=C0{r.chars(UPPER_ALNUM, 8)}" > history.json
""", xoxp),
        _sample("chat", "slack_app_token", "bots/config.yaml", f"""slack:
  app_token: {xapp}
  signing_secret: {slack_signing}
  socket_mode: true
""", xapp, slack_signing),
        _sample("chat", "slack_webhook", "alerts/alertmanager.yml", f"""route:
  receiver: ops-slack
receivers:
  - name: ops-slack
    slack_configs:
      - api_url: {hook}
        channel: "#ops-alerts"
        send_resolved: true
""", hook_secret),
        _sample("chat", "discord_webhook", "notify/discord.go", f"""package notify

import (
	"bytes"
	"encoding/json"
	"net/http"
)

const webhookURL = "https://discord.com/api/webhooks/{r.digits(19)}/{discord_hook_token}"

func Send(message string) error {{
	body, _ := json.Marshal(map[string]string{{"content": message}})
	_, err := http.Post(webhookURL, "application/json", bytes.NewReader(body))
	return err
}}
""", discord_hook_token),
        _sample("chat", "discord_bot_token", "bots/discord_bot.js", f"""const {{ Client, GatewayIntentBits }} = require("discord.js");

const DISCORD_TOKEN = "{discord_bot}";
const client = new Client({{ intents: [GatewayIntentBits.Guilds] }});

client.once("ready", () => console.log(`logged in as ${{client.user.tag}}`));
client.login(DISCORD_TOKEN);
""", discord_bot),
        _sample("chat", "teams_webhook", "config/alerts.json", json.dumps(
            {"teams": {"channel": "Ops Alerts", "webhook_url": teams_url}, "severity": "warning"}, indent=2) + "\n",
            teams_id, teams_v2),
        _sample("chat", "telegram_bot_token", "bots/telegram_bot.py", f'''import telebot

TELEGRAM_BOT_TOKEN = "{telegram}"
bot = telebot.TeleBot(TELEGRAM_BOT_TOKEN)


@bot.message_handler(commands=["status"])
def status(message):
    bot.reply_to(message, "all systems nominal")
''', telegram),
        _sample("chat", "twilio_api_key", "services/sms.rb", f"""require "twilio-ruby"

ACCOUNT_SID = "AC{r.hex(32)}"
API_KEY_SID = "{twilio_sk}"
API_KEY_SECRET = "{twilio_secret}"

client = Twilio::REST::Client.new(API_KEY_SID, API_KEY_SECRET, ACCOUNT_SID)
""", twilio_sk, twilio_secret),
        _sample("chat", "sendgrid_api_key", "app/Mail/SendgridMailer.php", f"""<?php

namespace App\\Mail;

use SendGrid;

class SendgridMailer
{{
    public function client(): SendGrid
    {{
        return new SendGrid('{sendgrid}');
    }}
}}
""", sendgrid),
        _sample("chat", "mailgun_api_key", "config/mail.php", f"""<?php

return [
    'driver' => 'mailgun',
    'mailgun' => [
        'domain' => 'mg.acme.io',
        'secret' => '{mailgun}',
        'endpoint' => 'api.eu.mailgun.net',
    ],
];
""", mailgun),
        _sample("chat", "mailchimp_api_key", "newsletter/settings.toml", f"""[mailchimp]
api_key = "{mailchimp}"
server = "us12"
list_id = "{r.hex(10)}"
""", mailchimp),
        _sample("chat", "sendinblue_api_key", "mailer/brevo.env", f"""BREVO_API_KEY={brevo}
BREVO_SENDER=noreply@acme.io
""", brevo),
    ]


def _payment(r: _Rand) -> list[Sample]:
    sk_live = _p("sk", "_live_") + "51" + r.alnum(97)
    rk_live = _p("rk", "_live_") + "51" + r.alnum(97)
    whsec = _p("wh", "sec_") + r.alnum(32)
    sq_secret, sq_token = _p("sq0", "csp-") + r.chars(B64URL, 43), _p("EA", "AA") + r.chars(B64URL, 60)
    sq_legacy = _p("sq0", "atp-") + r.chars(B64URL, 22)
    shpss, shpat = _p("shp", "ss_") + r.hex(32), _p("shp", "at_") + r.hex(32)
    braintree = _p("access_token", "$production$") + r.chars(LOWER_ALNUM, 16) + "$" + r.hex(32)
    flw = _p("FLW", "SECK-") + r.hex(32) + "-X"
    plaid_secret, plaid_token = r.hex(30), _p("access-", "production-") + r.uuid()
    rzp_secret = r.alnum(24)
    return [
        _sample("payment", "stripe_secret_key", "billing/stripe_client.rb", f"""require "stripe"

Stripe.api_key = "{sk_live}"
Stripe.api_version = "2024-06-20"

def charge(amount_cents, customer)
  Stripe::PaymentIntent.create(amount: amount_cents, currency: "eur", customer: customer)
end
""", sk_live),
        _sample("payment", "stripe_restricted_key", "workers/refunds.ts", f"""import Stripe from "stripe";

const stripe = new Stripe("{rk_live}", {{ apiVersion: "2024-06-20" }});

export async function refund(paymentIntent: string): Promise<Stripe.Refund> {{
  return stripe.refunds.create({{ payment_intent: paymentIntent }});
}}
""", rk_live),
        _sample("payment", "stripe_webhook_secret", "internal/payments/webhook.go", f"""package payments

import "github.com/stripe/stripe-go/v79/webhook"

var endpointSecret = "{whsec}"

func Verify(payload []byte, header string) error {{
	_, err := webhook.ConstructEvent(payload, header, endpointSecret)
	return err
}}
""", whsec),
        _sample("payment", "square_oauth_secret_and_token", "config/square.json", json.dumps({
            "environment": "production", "application_id": _p("sq0", "idp-") + r.chars(B64URL, 22),
            "application_secret": sq_secret, "access_token": sq_token, "location_id": "L" + r.chars(UPPER_ALNUM, 12),
        }, indent=2) + "\n", sq_secret, sq_token),
        _sample("payment", "square_legacy_access_token", "payments/square_legacy.py", f'''from square.client import Client

client = Client(access_token="{sq_legacy}", environment="production")


def list_locations():
    return client.locations.list_locations().body["locations"]
''', sq_legacy),
        _sample("payment", "shopify_tokens", "app/shopify_config.rb", f"""ShopifyAPI::Context.setup(
  api_key: "{r.hex(32)}",
  api_secret_key: "{shpss}",
  host: "https://shop-sync.acme.io",
  scope: "read_orders,write_products",
  is_embedded: false,
  api_version: "2024-07",
)

SHOP_ACCESS_TOKEN = "{shpat}"
""", shpss, shpat),
        _sample("payment", "braintree_access_token", "config/braintree.js", f"""const braintree = require("braintree");

module.exports = new braintree.BraintreeGateway({{
  accessToken: "{braintree}",
}});
""", braintree),
        _sample("payment", "flutterwave_secret_key", "payments/flutterwave.py", f'''FLW_PUBLIC_KEY = "FLWPUBK-{r.hex(32)}-X"
FLW_SECRET_KEY = "{flw}"
FLW_BASE_URL = "https://api.flutterwave.com/v3"
''', flw),
        _sample("payment", "plaid_secret_and_access_token", "config/plaid.yaml", f"""plaid:
  env: production
  client_id: {r.hex(24)}
  secret: {plaid_secret}
  access_token: {plaid_token}
  products: [transactions, balance]
""", plaid_secret, plaid_token),
        _sample("payment", "razorpay_key_secret", "checkout/razorpay.js", f"""const Razorpay = require("razorpay");

const razorpay = new Razorpay({{
  key_id: "{_p("rzp", "_live_")}{r.alnum(14)}",
  key_secret: "{rzp_secret}",
}});

module.exports = razorpay;
""", rzp_secret),
    ]


def _saas(r: _Rand) -> list[Sample]:
    openai = _p("sk-", "proj-") + r.chars(B64URL, 74) + _p("T3Blbk", "FJ") + r.chars(B64URL, 74)
    anthropic = _p("sk-ant-", "api03-") + r.chars(B64URL, 93) + "AA"
    hf = _p("h", "f_") + r.chars(string.ascii_letters, 34)
    pplx = _p("pp", "lx-") + r.alnum(48)
    gsk = _p("gs", "k_") + r.alnum(52)
    r8 = _p("r", "8_") + r.alnum(37)
    pmak = _p("PM", "AK-") + r.hex(24) + "-" + r.hex(34)
    lin = _p("lin", "_api_") + r.alnum(40)
    ntn = _p("nt", "n_") + r.digits(11) + r.alnum(35)
    nrak = _p("NR", "AK-") + r.chars(UPPER_ALNUM, 27)
    sentry_claims = _b64(json.dumps({"iat": r.rng.randint(1_700_000_000, 1_760_000_000), "url": "https://sentry.io",
                                     "region_url": "https://us.sentry.io", "org": "acme"}, separators=(",", ":")))
    sntrys_secret = r.chars(B64, 43)  # the claims before it are readable JSON; this part is the credential
    sntrys = _p("sntr", "ys_") + sentry_claims.rstrip("=") + "_" + sntrys_secret
    glc = _p("gl", "c_") + _b64(json.dumps({"o": r.digits(6), "n": "stack-" + r.digits(6) + "-hm-write",
                                            "k": r.alnum(24), "m": {"r": "prod-eu-west-2"}}, separators=(",", ":")))
    glsa = _p("gl", "sa_") + r.alnum(32) + "_" + r.hex(8)
    dd_api, dd_app = r.hex(32), r.hex(40)
    atatt = _p("ATA", "TT3") + r.chars(B64URL, 177) + "=" + r.hex(8)
    age = _p("AGE-SECRET", "-KEY-1") + r.chars(BECH32, 58).upper()
    op_claims = json.dumps({"signInAddress": "acme.1password.com", "userAuth": {"method": "SRPg-4096",
                            "alg": "PBES2g-HS256", "iterations": 650000, "salt": r.alnum(22)},
                            "email": f"{r.chars(LOWER, 12)}@acmeops.1passwordserviceaccounts.com",
                            "srpX": r.hex(64), "muk": {"alg": "A256GCM", "ext": True, "k": r.chars(B64URL, 43),
                                                       "key_ops": ["encrypt", "decrypt"], "kty": "oct",
                                                       "kid": "mp"}, "deviceUuid": r.chars(LOWER_ALNUM, 26)},
                           separators=(",", ":"))
    ops = _p("op", "s_") + _b64(op_claims).rstrip("=")
    dt = _p("dt0", "c01.") + r.chars(UPPER_ALNUM, 24) + "." + r.chars(UPPER_ALNUM, 64)
    shippo = _p("shippo", "_live_") + r.hex(40)
    tfp = _p("tf", "p_") + r.alnum(44) + "_" + r.alnum(14)
    ezak = _p("EZ", "AK") + r.alnum(54)
    notebook = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Fine-tune the ranker\n", "\n",
                                                                 "Log in to the Hub, then train for one epoch."]},
            {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [],
             "source": ["from huggingface_hub import login\n", "\n", f'login(token="{hf}")\n']},
            {"cell_type": "code", "execution_count": 2, "metadata": {}, "outputs": [],
             "source": ["from datasets import load_dataset\n", "\n",
                        'dataset = load_dataset("acme/queries", split="train")\n']},
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    postman = {
        "id": r.uuid(), "name": "production",
        "values": [
            {"key": "base_url", "value": "https://api.acme.io", "type": "default", "enabled": True},
            {"key": "postman_api_key", "value": pmak, "type": "secret", "enabled": True},
        ],
        "_postman_variable_scope": "environment",
    }
    return [
        _sample("saas", "openai_project_key", "app/llm.py", f'''from openai import OpenAI

client = OpenAI(api_key="{openai}")
MODEL = "gpt-4o-mini"


def summarize(text: str) -> str:
    response = client.chat.completions.create(model=MODEL, messages=[{{"role": "user", "content": text}}])
    return response.choices[0].message.content
''', openai),
        _sample("saas", "anthropic_api_key", "agents/claude.ts", f"""import Anthropic from "@anthropic-ai/sdk";

const anthropic = new Anthropic({{ apiKey: "{anthropic}" }});

export async function ask(question: string): Promise<string> {{
  const message = await anthropic.messages.create({{
    model: "claude-3-5-sonnet-latest",
    max_tokens: 1024,
    messages: [{{ role: "user", content: question }}],
  }});
  return message.content[0].type === "text" ? message.content[0].text : "";
}}
""", anthropic),
        _sample("saas", "huggingface_token_in_notebook", "notebooks/finetune.ipynb",
                json.dumps(notebook, indent=1) + "\n", hf),
        _sample("saas", "perplexity_api_key", "web/.env.local", f"""NEXT_PUBLIC_APP_NAME=Acme Search
PERPLEXITY_API_KEY={pplx}
""", pplx),
        _sample("saas", "groq_api_key", "services/chat/config.py", f'''GROQ_API_KEY = "{gsk}"
GROQ_MODEL = "llama-3.1-70b-versatile"
REQUEST_TIMEOUT_S = 30
''', gsk),
        _sample("saas", "replicate_api_token", "scripts/generate_images.sh", f"""#!/bin/sh
export REPLICATE_API_TOKEN={r8}
python -m tools.generate --prompt-file prompts.txt --out renders/
""", r8),
        _sample("saas", "postman_api_key", "postman/production.postman_environment.json",
                json.dumps(postman, indent=2) + "\n", pmak),
        _sample("saas", "linear_api_key", "tools/linear_sync.ts", f"""import {{ LinearClient }} from "@linear/sdk";

export const linear = new LinearClient({{ apiKey: "{lin}" }});

export async function openIssues(teamKey: string) {{
  const issues = await linear.issues({{ filter: {{ team: {{ key: {{ eq: teamKey }} }} }} }});
  return issues.nodes;
}}
""", lin),
        _sample("saas", "notion_token", "integrations/notion.py", f'''from notion_client import Client

notion = Client(auth="{ntn}")
DATABASE_ID = "{r.hex(32)}"


def roadmap_items():
    return notion.databases.query(database_id=DATABASE_ID)["results"]
''', ntn),
        _sample("saas", "new_relic_user_key", "ops/newrelic.sh", f"""#!/bin/sh
export NEW_RELIC_API_KEY={nrak}
newrelic entity search --name acme-api
""", nrak),
        _sample("saas", "sentry_org_token", "sentry.properties", f"""defaults.url=https://sentry.io/
defaults.org=acme
defaults.project=api
auth.token={sntrys}
""", sntrys, sntrys_secret),
        _sample("saas", "grafana_cloud_token", "monitoring/grafana-agent.yaml", f"""metrics:
  configs:
    - name: default
      remote_write:
        - url: https://prometheus-prod-24-prod-eu-west-2.grafana.net/api/prom/push
          basic_auth:
            username: {r.digits(7)}
            password: {glc}
""", glc),
        _sample("saas", "grafana_service_account_token", "dashboards/sync.py", f'''import requests

GRAFANA_URL = "https://grafana.acme.io"
HEADERS = {{"Authorization": "Bearer {glsa}"}}


def dashboards() -> list[dict]:
    return requests.get(f"{{GRAFANA_URL}}/api/search", headers=HEADERS, timeout=10).json()
''', glsa),
        _sample("saas", "datadog_api_and_app_key", "terraform/datadog.tf", f"""provider "datadog" {{
  api_key = "{dd_api}"
  app_key = "{dd_app}"
  api_url = "https://api.datadoghq.eu/"
}}
""", dd_api, dd_app),
        _sample("saas", "atlassian_api_token", "scripts/jira_report.py", f'''from jira import JIRA

JIRA_URL = "https://acme.atlassian.net"
JIRA_USER = "ops@acme.io"
JIRA_API_TOKEN = "{atatt}"

jira = JIRA(server=JIRA_URL, basic_auth=(JIRA_USER, JIRA_API_TOKEN))
''', atatt),
        _sample("saas", "age_secret_key", "secrets/age-key.txt", f"""# created: 2025-03-14T09:12:44Z
# public key: age1{r.chars(BECH32, 58)}
{age}
""", age),
        _sample("saas", "onepassword_service_account_token", ".github/workflows/deploy-secrets.yml", f"""name: deploy
on: workflow_dispatch
jobs:
  deploy:
    runs-on: ubuntu-latest
    env:
      OP_SERVICE_ACCOUNT_TOKEN: {ops}
    steps:
      - uses: 1password/load-secrets-action@v2
""", ops),
        _sample("saas", "dynatrace_api_token", "monitoring/dynatrace.yaml", f"""dynatrace:
  environment: https://abc12345.live.dynatrace.com
  apiToken: {dt}
  tags: [team:platform]
""", dt),
        _sample("saas", "shippo_api_token", "shipping/labels.php", f"""<?php
require_once __DIR__ . '/bootstrap.php';

Shippo::setApiKey('{shippo}');
$shipment = Shippo_Shipment::create(['address_from' => $from, 'address_to' => $to, 'parcels' => [$parcel]]);
""", shippo),
        _sample("saas", "typeform_api_token", "forms/typeform.ts", f"""const TYPEFORM_TOKEN = "{tfp}";

export async function responses(formId: string) {{
  const res = await fetch(`https://api.typeform.com/forms/${{formId}}/responses`, {{
    headers: {{ Authorization: `Bearer ${{TYPEFORM_TOKEN}}` }},
  }});
  return res.json();
}}
""", tfp),
        _sample("saas", "easypost_api_key", "shipping/easypost.rb", f"""require "easypost"

client = EasyPost::Client.new(api_key: "{ezak}")
shipment = client.shipment.retrieve(ARGV.fetch(0))
puts shipment.tracking_code
""", ezak),
    ]


def _jwts(r: _Rand) -> list[Sample]:
    now = r.rng.randint(1_700_000_000, 1_750_000_000)
    service_jwt, service_sig = _jwt(r, {"sub": "svc-reporting", "iat": now, "exp": now + 31_536_000,
                                        "scope": "reports:read"})
    role_jwt, role_sig = _jwt(r, {"iss": "supabase", "ref": r.chars(LOWER, 20), "role": "service_role",
                                  "iat": now, "exp": now + 315_360_000})
    return [
        _sample("jwt", "jwt_in_code", "src/api/serviceAuth.js", f"""// Long-lived service token for the reporting backend.
const SERVICE_JWT = "{service_jwt}";

export function authHeaders() {{
  return {{ Authorization: `Bearer ${{SERVICE_JWT}}` }};
}}
""", service_jwt, service_sig),
        _sample("jwt", "jwt_in_config", "config/services.yaml", f"""supabase:
  url: https://{r.chars(LOWER, 20)}.supabase.co
  service_role: {role_jwt}
  schema: public
""", role_jwt, role_sig),
    ]


def _private_keys(r: _Rand) -> list[Sample]:
    rsa, rsa_key = _pem(r, "RSA " + _PK, _RSA_PKCS1, 1150)
    ec, ec_key = _pem(r, "EC " + _PK, _EC, 112)
    dsa, dsa_key = _pem(r, "DSA " + _PK, _DSA, 430)
    pkcs8, pkcs8_key = _pem(r, _PK, _PKCS8, 1150)
    encrypted, encrypted_key = _pem(r, "ENCRYPTED " + _PK, _ENCRYPTED_PKCS8, 1250)
    legacy_begin, legacy_end = _armor("RSA " + _PK)
    legacy_key = _key_body(r, b"", 1190)
    legacy = "\n".join([legacy_begin, "Proc-Type: 4,ENCRYPTED", f"DEK-Info: AES-256-CBC,{r.hex(32).upper()}", "",
                        *legacy_key.lines, legacy_end])
    ssh_begin, ssh_end = _armor("OPENSSH " + _PK)
    ssh_key = _key_body(r, _OPENSSH_ED25519, 300, width=70)
    pgp_begin, pgp_end = _armor("PGP " + _PK + " BLOCK")
    pgp_key = _key_body(r, _PGP_SECRET_KEY, 900)
    pgp = "\n".join([pgp_begin, "Comment: Acme release signing key", "", *pgp_key.lines,
                     "=" + r.chars(B64, 4), pgp_end])
    ppk_public = _key_body(r, bytes.fromhex("00000007") + b"ssh-rsa" + bytes.fromhex("0000000301000100000101"), 260)
    ppk_private = _key_body(r, bytes.fromhex("00000100"), 880)
    ppk = "\n".join(["PuTTY-User-Key-File-3: ssh-rsa", "Encryption: none", "Comment: deploy@ci",
                     f"Public-Lines: {len(ppk_public.lines)}", *ppk_public.lines,
                     f"Private-Lines: {len(ppk_private.lines)}", *ppk_private.lines, f"Private-MAC: {r.hex(64)}"])
    # 1024-bit: a 2048-bit key on one line is a 1,700-character line, which ingestion skips as minified.
    inline_pem, inline_key = _pem(r, "RSA " + _PK, _RSA_1024, 590)
    inline_json = {"issuer": "https://auth.acme.io", "kid": "2024-09-rotation", "algorithm": "RS256",
                   "private_key": inline_pem + "\n"}
    code_pem, code_key = _pem(r, "EC " + _PK, _EC, 112)
    yaml_pem, yaml_key = _pem(r, _PK, _PKCS8, 1150)
    cert_begin, cert_end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    cert = _key_body(r, bytes.fromhex("308203"), 700).lines

    def indent(block: str, spaces: int) -> str:
        return "\n".join(" " * spaces + line for line in block.split("\n"))

    return [
        _sample("private_key", "pem_rsa", "deploy/keys/id_rsa", rsa + "\n", *rsa_key.secret_lines),
        _sample("private_key", "pem_ec", "certs/server-ec.key", ec + "\n", *ec_key.secret_lines),
        _sample("private_key", "pem_dsa", "legacy/ssh/ssh_host_dsa_key", dsa + "\n", *dsa_key.secret_lines),
        _sample("private_key", "pem_pkcs8", "config/jwt/private.pem", pkcs8 + "\n", *pkcs8_key.secret_lines),
        _sample("private_key", "pem_encrypted_pkcs8", "certs/client-encrypted.pem", encrypted + "\n",
                *encrypted_key.secret_lines),
        _sample("private_key", "pem_rsa_legacy_encrypted", "certs/legacy.key", legacy + "\n",
                *legacy_key.secret_lines),
        _sample("private_key", "openssh", "keys/id_ed25519",
                "\n".join([ssh_begin, *ssh_key.lines, ssh_end]) + "\n", *ssh_key.secret_lines),
        _sample("private_key", "pgp_private_key_block", "release/signing-key.asc", pgp + "\n",
                *pgp_key.secret_lines),
        _sample("private_key", "putty_ppk", "keys/deploy.ppk", ppk + "\n", *ppk_private.secret_lines),
        _sample("private_key", "escaped_one_line_json", "config/jwt-keys.json",
                json.dumps(inline_json, indent=2) + "\n", *inline_key.secret_lines),
        _sample("private_key", "pem_in_python_string", "app/auth/signing.py", f'''"""Signs webhook payloads for partners."""

import jwt

PRIVATE_KEY = """{code_pem}
"""


def sign(payload: dict) -> str:
    return jwt.encode(payload, PRIVATE_KEY, algorithm="ES256")
''', *code_key.secret_lines),
        _sample("private_key", "pem_in_yaml_block_scalar", "config/saml.yaml", f"""sp:
  entity_id: https://app.acme.io/saml/metadata
  certificate: |
{indent(chr(10).join([cert_begin, *cert, cert_end]), 4)}
  private_key: |
{indent(yaml_pem, 4)}
  want_assertions_signed: true
""", *yaml_key.secret_lines),
    ]


def _connection_strings(r: _Rand) -> list[Sample]:
    pg, mongo, redis, jdbc, ado = (r.password() for _ in range(5))
    return [
        _sample("connection_string", "postgres_url", "config/database.yml", f"""default: &default
  adapter: postgresql
  pool: 5

production:
  <<: *default
  url: postgres://app_user:{pg}@db.internal.acme.io:5432/app_production
""", pg),
        _sample("connection_string", "mongodb_srv_url", "src/db.ts", f"""import mongoose from "mongoose";

export async function connect(): Promise<void> {{
  await mongoose.connect("mongodb+srv://svc-orders:{mongo}@cluster0.q4w8e.mongodb.net/orders?retryWrites=true&w=majority");
}}
""", mongo),
        _sample("connection_string", "redis_url_password_only", "config/cache.py", f'''CACHES = {{
    "default": {{
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://:{redis}@cache.internal.acme.io:6379/1",
    }}
}}
''', redis),
        _sample("connection_string", "jdbc_query_password", "src/main/java/com/acme/shop/Db.java", f"""package com.acme.shop;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;

public final class Db {{
    private static final String URL =
        "jdbc:mysql://db.internal.acme.io:3306/shop?user=shop_app&password={jdbc}&useSSL=true";

    public static Connection open() throws SQLException {{
        return DriverManager.getConnection(URL);
    }}
}}
""", jdbc),
        _sample("connection_string", "adonet_connection_string", "src/Api/appsettings.Production.json", f"""{{
  "ConnectionStrings": {{
    "Default": "Server=tcp:sql-acme.database.windows.net,1433;Initial Catalog=shop;User Id=shop_app;Password={ado};Encrypt=True;"
  }}
}}
""", ado),
    ]


def _credential_files(r: _Rand) -> list[Sample]:
    netrc_pw, heroku = r.password(), r.uuid()
    ghp, glpat, git_pw = _p("gh", "p_") + r.alnum(36), _p("gl", "pat-") + r.chars(B64URL, 20), r.password()
    curl_pw = r.password()
    return [
        _sample("credential_file", "netrc", ".netrc", f"""machine artifacts.acme.io
  login ci-bot
  password {netrc_pw}

machine api.heroku.com login ops@acme.io password {heroku}
""", netrc_pw, heroku),
        _sample("credential_file", "git_credentials", ".git-credentials", f"""https://ci-bot:{ghp}@github.com
https://oauth2:{glpat}@gitlab.acme.io
https://deploy:{git_pw}@git.acme.io
""", ghp, glpat, git_pw),
        _sample("credential_file", "curl_user_password", "scripts/trigger_jenkins.sh", f"""#!/bin/sh
curl -fsS -u admin:{curl_pw} -X POST https://jenkins.acme.io/job/deploy/buildWithParameters?ENV=prod
""", curl_pw),
    ]


def _kubernetes(r: _Rand) -> list[Sample]:
    user, pw = _b64(f"svc-orders-{r.chars(LOWER_ALNUM, 4)}"), _b64(r.password(20))
    stripe = _b64(_p("sk", "_live_") + r.alnum(60))
    config = _b64(json.dumps({"endpoint": "https://api.acme.io", "token": r.alnum(40)}))
    dsn_pw, api_token, license_key = r.password(), r.alnum(40), r.chars(UPPER_ALNUM, 32)
    dockerconfig = _b64(json.dumps({"auths": {"registry.acme.io": {"username": "deployer", "password": r.password(),
                                                                   "auth": _b64(f"deployer:{r.password()}")}}}))
    return [
        _sample("kubernetes", "secret_data_base64", "deploy/k8s/secret.yaml", f"""apiVersion: v1
kind: Secret
metadata:
  name: api-credentials
  namespace: prod
type: Opaque
data:
  DB_USER: {user}
  DB_PASSWORD: {pw}
  STRIPE_KEY: {stripe}
  config.json: {config}
""", user, pw, stripe, config),
        _sample("kubernetes", "secret_string_data", "deploy/k8s/worker-secrets.yaml", f"""apiVersion: v1
kind: Secret
metadata:
  name: worker-env
  namespace: prod
type: Opaque
stringData:
  DATABASE_URL: postgres://worker:{dsn_pw}@db.internal:5432/jobs
  API_TOKEN: "{api_token}"
  LICENSE: "{license_key}"
""", dsn_pw, api_token, license_key),
        _sample("kubernetes", "dockerconfigjson", "deploy/k8s/regcred.yaml", f"""apiVersion: v1
kind: Secret
metadata:
  name: regcred
  namespace: prod
type: kubernetes.io/dockerconfigjson
data:
  .dockerconfigjson: {dockerconfig}
""", dockerconfig),
    ]


def _terraform(r: _Rand) -> list[Sample]:
    db_pw, akia, secret = r.password(), _p("AK", "IA") + r.chars(BASE32, 16), r.chars(B64, 40)
    smtp = r.b64_bytes(33)
    pem, key = _pem(r, "RSA " + _PK, _RSA_PKCS1, 1150)
    admin_token = r.alnum(48)
    aws = 'provider["registry.terraform.io/hashicorp/aws"]'
    state = {
        "version": 4, "terraform_version": "1.8.5", "serial": 42, "lineage": r.uuid(),
        "outputs": {
            "api_admin_token": {"value": admin_token, "type": "string", "sensitive": True},
            "db_endpoint": {"value": "shop.c9akciq32.eu-west-1.rds.amazonaws.com:5432", "type": "string"},
        },
        "resources": [
            {"mode": "managed", "type": "aws_db_instance", "name": "shop", "provider": aws, "instances": [
                {"schema_version": 2, "attributes": {"identifier": "shop", "engine": "postgres", "port": 5432,
                                                     "username": "shop_admin", "password": db_pw},
                 "sensitive_attributes": [[{"type": "get_attr", "value": "password"}]]}]},
            {"mode": "managed", "type": "aws_iam_access_key", "name": "ci", "provider": aws, "instances": [
                {"schema_version": 0, "attributes": {"id": akia, "secret": secret, "ses_smtp_password_v4": smtp,
                                                     "status": "Active", "user": "ci"}}]},
            {"mode": "managed", "type": "tls_private_key", "name": "deploy", "provider":
             'provider["registry.terraform.io/hashicorp/tls"]', "instances": [
                {"schema_version": 1, "attributes": {"algorithm": "RSA", "rsa_bits": 2048,
                                                     "private_key_pem": pem + "\n"}}]},
        ],
        "check_results": None,
    }
    return [
        _sample("terraform", "tfstate", "infra/terraform.tfstate", json.dumps(state, indent=2) + "\n",
                db_pw, akia, secret, smtp, admin_token, *key.secret_lines),
    ]


def _generic(r: _Rand) -> list[Sample]:
    def rnd() -> str:
        return r.chars(ALNUM, 40)

    json_secret, json_token, json_signing, json_key_id = rnd(), rnd(), rnd(), r.hex(40)
    yaml_secret, yaml_auth, yaml_key_id, yaml_pw = rnd(), _b64(f"robot:{r.password()}"), r.hex(40), r.password()
    toml_key_id, toml_secret, toml_token = r.chars(UPPER_ALNUM, 20), r.chars(B64, 40), rnd()
    ini_pw, ini_secret = r.password(), rnd()
    env_pw, env_secret, env_auth, env_smtp = r.password(), r.chars(DJANGO_CHARS, 50), r.b64_bytes(32), r.password()
    prop_pw, prop_secret, prop_signing = r.password(), rnd(), rnd()
    django_secret, django_db, django_mail = r.chars(DJANGO_CHARS, 50), r.password(), r.password()
    xml_pw = r.password()
    sh_pw, sh_root = r.password(), r.password()
    docker_pw, docker_secret = r.password(), rnd()
    wp_pw, wp_auth, wp_secure = r.password(), r.chars(WP_SALT_CHARS, 64), r.chars(WP_SALT_CHARS, 64)
    return [
        _sample("generic", "json_keys", "config/credentials.json", json.dumps({"service": {
            "name": "billing", "client_id": "billing-svc", "client_secret": json_secret, "api_token": json_token,
            "signing_key": json_signing, "private_key_id": json_key_id, "timeout_s": 30}}, indent=2) + "\n",
            json_secret, json_token, json_signing, json_key_id),
        _sample("generic", "yaml_keys", "config/app.yaml", f"""app:
  name: orders
  auth:
    client_secret: {yaml_secret}
    private_key_id: {yaml_key_id}
  registry:
    url: https://registry.acme.io
    auth: {yaml_auth}
  webhook:
    password: "{yaml_pw}"
""", yaml_secret, yaml_key_id, yaml_auth, yaml_pw),
        _sample("generic", "toml_keys", "config/settings.toml", f"""[storage]
endpoint = "https://minio.internal.acme.io:9000"
access_key_id = "{toml_key_id}"
secret_access_key = "{toml_secret}"

[api]
api_token = "{toml_token}"
retries = 3
""", toml_key_id, toml_secret, toml_token),
        _sample("generic", "ini_keys", "config/app.ini", f"""[database]
host = db.internal
user = app
password = {ini_pw}

[session]
secret_key = {ini_secret}
cookie_name = sid
""", ini_pw, ini_secret),
        _sample("generic", "dotenv", ".env", f"""APP_ENV=production
DATABASE_URL=postgres://app:{env_pw}@db.internal:5432/app
DJANGO_SECRET_KEY='{env_secret}'
AUTH={env_auth}
SMTP_PASSWORD={env_smtp}
LOG_LEVEL=info
""", env_pw, env_secret, env_auth, env_smtp),
        _sample("generic", "java_properties", "app.properties", f"""app.name=orders
db.url=jdbc:postgresql://db:5432/orders
db.username=orders
db.password={prop_pw}
oauth.client_secret={prop_secret}
hmac.signing_key={prop_signing}
""", prop_pw, prop_secret, prop_signing),
        _sample("generic", "django_settings", "config/settings.py", f'''DEBUG = False
ALLOWED_HOSTS = ["api.acme.io"]
SECRET_KEY = "{django_secret}"

DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "USER": "shop",
        "PASSWORD": "{django_db}",
        "HOST": "db.internal",
    }}
}}

EMAIL_HOST_PASSWORD = "{django_mail}"
''', django_secret, django_db, django_mail),
        _sample("generic", "hibernate_xml_property", "src/main/resources/hibernate.cfg.xml", f"""<hibernate-configuration>
  <session-factory>
    <property name="hibernate.connection.url">jdbc:postgresql://db:5432/shop</property>
    <property name="hibernate.connection.username">shop</property>
    <property name="hibernate.connection.password">{xml_pw}</property>
  </session-factory>
</hibernate-configuration>
""", xml_pw),
        _sample("generic", "shell_exports", "scripts/backup.sh", f"""#!/bin/sh
set -e
export PGPASSWORD='{sh_pw}'
pg_dump -h db.internal -U backup shop | gzip > /backups/shop.sql.gz
mysqldump -u root -p'{sh_root}' --all-databases > /backups/all.sql
""", sh_pw, sh_root),
        _sample("generic", "dockerfile_env", "services/worker/Dockerfile", f"""FROM python:3.12-slim
WORKDIR /app
COPY . .
ENV DB_PASSWORD={docker_pw}
ENV SIGNING_SECRET={docker_secret}
RUN pip install --no-cache-dir -r requirements.txt
CMD ["python", "-m", "worker"]
""", docker_pw, docker_secret),
        _sample("generic", "wordpress_defines", "wordpress/wp-config.php", f"""<?php
define( 'DB_NAME', 'wordpress' );
define( 'DB_USER', 'wp' );
define( 'DB_PASSWORD', '{wp_pw}' );
define( 'DB_HOST', 'db.internal' );

define( 'AUTH_KEY',         '{wp_auth}' );
define( 'SECURE_AUTH_KEY',  '{wp_secure}' );
""", wp_pw, wp_auth, wp_secure),
    ]


FAMILIES = ("cloud", "vcs_ci", "registry", "chat", "payment", "saas", "jwt", "private_key", "connection_string",
            "credential_file", "kubernetes", "terraform", "generic")


def build_secret_corpus(seed: int = 0) -> list[Sample]:
    """Every sample of every family; the same ``seed`` gives the same corpus."""
    r = _Rand(seed)
    samples = [
        *_cloud(r), *_vcs_ci(r), *_registries(r), *_chat(r), *_payment(r), *_saas(r), *_jwts(r),
        *_private_keys(r), *_connection_strings(r), *_credential_files(r), *_kubernetes(r), *_terraform(r),
        *_generic(r),
    ]
    paths = [s.path for s in samples]
    ids = [s.id for s in samples]
    if len(set(paths)) != len(paths) or len(set(ids)) != len(ids):
        raise AssertionError("sample paths and ids must be unique")
    return samples


def write_corpus(repo_dir: Path, samples: list[Sample] | list[tuple[str, str]]) -> None:
    """Write each sample (or ``(path, text)`` pair) at its path under ``repo_dir``."""
    for item in samples:
        path, text = (item.path, item.text) if isinstance(item, Sample) else item
        target = repo_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- ordinary look-alikes

# The look-alikes that must never be masked, whatever the masking rate elsewhere: class -> (a regex
# of the look-alike, the benign files where it is the point of the file). Scoped by path because
# the same shape means something else elsewhere (a 40-hex HMAC test key is not a git SHA).
STRICT_BENIGN: dict[str, tuple[re.Pattern[str], tuple[str, ...]]] = {
    "lockfile_integrity": (
        re.compile(r"\b(?:sha512|sha384|sha256|sha1)-[A-Za-z0-9+/]{27,}={0,2}|\bh1:[A-Za-z0-9+/]{43}="),
        ("docs/lock-example.json", "docs/dependencies.md", "web/index.html"),
    ),
    "git_sha": (
        re.compile(r"(?<![A-Za-z0-9])[0-9a-f]{40}(?![A-Za-z0-9])|(?:\bin |\()[0-9a-f]{7,12}\b"),
        ("CHANGELOG.md", ".github/workflows/ci.yml", ".pre-commit-config.yaml", "docs/dependencies.md"),
    ),
    "uuid": (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
        ("src/tenancy/ids.py", "tests/fixtures/users.json"),
    ),
    "data_uri_image": (
        re.compile(r"data:image/(?:png|gif|jpeg|svg\+xml);base64,[A-Za-z0-9+/]{20,}"),
        ("web/index.html", "web/styles.css", "docs/branding.md"),
    ),
}


def _png(r: _Rand, width: int, height: int) -> bytes:
    """A real (random-pixel) RGB PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\0" + r.bytes(width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def build_benign_corpus(seed: int = 0) -> list[tuple[str, str]]:
    """Ordinary files full of secret look-alikes that are not secrets: ``(path, text)`` pairs."""
    r = _Rand(seed + 10_000)

    def sri(kind: str, nbytes: int) -> str:
        return f"{kind}-{r.b64_bytes(nbytes)}"

    def sha() -> str:
        return r.hex(40)

    icon = base64.b64encode(_png(r, 6, 6)).decode()
    logo = base64.b64encode(_png(r, 8, 5)).decode()
    badge = base64.b64encode(_png(r, 5, 5)).decode()
    gosum = [f"{mod} {ver} h1:{r.b64_bytes(32)}" for mod, ver in (
        ("github.com/pkg/errors", "v0.9.1"), ("github.com/pkg/errors", "v0.9.1/go.mod"),
        ("golang.org/x/sync", "v0.7.0"), ("golang.org/x/sync", "v0.7.0/go.mod"),
        ("github.com/stretchr/testify", "v1.9.0"))]
    tenant, user_a, user_b, order, request = (r.uuid() for _ in range(5))
    short = [r.hex(8) for _ in range(4)]
    pins = [sha() for _ in range(3)]
    return [
        ("docs/lock-example.json", json.dumps({
            "name": "acme-web", "lockfileVersion": 3, "requires": True,
            "packages": {
                "node_modules/lodash": {"version": "4.17.21",
                                        "resolved": "https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz",
                                        "integrity": sri("sha512", 64)},
                "node_modules/left-pad": {"version": "1.3.0",
                                          "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
                                          "integrity": sri("sha1", 20)},
                "node_modules/react": {"version": "18.3.1",
                                       "resolved": "https://registry.npmjs.org/react/-/react-18.3.1.tgz",
                                       "integrity": sri("sha512", 64), "dependencies": {"loose-envify": "^1.1.0"}},
            }}, indent=2) + "\n"),
        ("docs/dependencies.md", f"""# Dependencies

Pinned module checksums (from `go.sum`):

```
{chr(10).join(gosum)}
```

The web client's `yarn.lock` entry for lodash:

```
lodash@^4.17.21:
  version "4.17.21"
  resolved "https://registry.yarnpkg.com/lodash/-/lodash-4.17.21.tgz#{sha()}"
  integrity {sri("sha512", 64)}
```

And from `Cargo.lock`:

```
[[package]]
name = "serde"
version = "1.0.203"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "{r.hex(64)}"
```
"""),
        ("CHANGELOG.md", f"""# Changelog

## 1.8.2

- Fix the retry loop that hammered the database after a failover (fixed in {short[0]}, reverted in {short[1]}).
- Parse `key = value` lines with trailing comments ({short[2]}).
- Upgrade pydantic; see https://github.com/acme/api/commit/{sha()} for the migration.

## 1.8.1

- Revert "Cache tokenizer output" (this reverts commit {sha()}).
- Merge pull request #412 from acme/fix-timeouts ({short[3]})
"""),
        (".github/workflows/ci.yml", f"""name: ci
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@{pins[0]} # v4.1.7
      - uses: actions/setup-python@{pins[1]} # v5.1.0
        with:
          python-version: "3.12"
      - run: pip install -e .[dev] && pytest -q
"""),
        (".pre-commit-config.yaml", f"""repos:
  - repo: https://github.com/astral-sh/ruff-pre-commit
    rev: {pins[2]}  # frozen: v0.5.0
    hooks:
      - id: ruff
"""),
        ("src/tenancy/ids.py", f'''"""Well-known identifiers of the demo tenant (seeded by the fixtures)."""

import uuid

DEMO_TENANT_ID = uuid.UUID("{tenant}")
SYSTEM_USER_ID = "{user_a}"
NAMESPACE_ORDERS = uuid.UUID("{order}")


def order_id(number: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE_ORDERS, str(number))
'''),
        ("tests/fixtures/users.json", json.dumps({"users": [
            {"id": user_a, "name": "System", "tenant_id": tenant, "roles": ["admin"]},
            {"id": user_b, "name": "Ada", "tenant_id": tenant, "roles": ["analyst"],
             "last_request_id": request},
        ]}, indent=2) + "\n"),
        ("tests/test_hashes.py", '''"""Known-answer tests for the hashing helpers (FIPS 180-4, RFC 1321, RFC 4231, FIPS 197)."""

import hashlib
import hmac

import pytest

SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
MD5_EMPTY = "d41d8cd98f00b204e9800998ecf8427e"

# RFC 4231 HMAC-SHA-256 test cases 1, 2 and 4: hex key, hex data, expected MAC.
RFC4231 = [
    {"key": "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "data": "4869205468657265",
     "mac": "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    {"key": "4a656665", "data": "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
     "mac": "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {"key": "0102030405060708090a0b0c0d0e0f10111213141516171819", "data": "cd" * 50,
     "mac": "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
]

# FIPS 197 appendix C.1: AES-128.
AES128_KEY = "000102030405060708090a0b0c0d0e0f"
AES128_PLAINTEXT = "00112233445566778899aabbccddeeff"
AES128_CIPHERTEXT = "69c4e0d86a7b0430d8cdb78070b4c55a"


def test_sha256_known_answers():
    assert hashlib.sha256(b"abc").hexdigest() == SHA256_ABC
    assert hashlib.sha256(b"").hexdigest() == SHA256_EMPTY
    assert hashlib.md5(b"").hexdigest() == MD5_EMPTY


@pytest.mark.parametrize("case", RFC4231)
def test_hmac_sha256_rfc4231(case):
    key, data = bytes.fromhex(case["key"]), bytes.fromhex(case["data"])
    assert hmac.new(key, data, hashlib.sha256).hexdigest() == case["mac"]
'''),
        ("web/index.html", f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Acme Search</title>
  <link rel="icon" href="data:image/png;base64,{icon}">
  <script src="https://cdn.jsdelivr.net/npm/htmx.org@2.0.0/dist/htmx.min.js"
          integrity="{sri("sha384", 48)}" crossorigin="anonymous"></script>
</head>
<body>
  <img alt="Acme" src="data:image/png;base64,{logo}">
  <form action="/login" method="post">
    <label for="password">Password</label>
    <input id="password" name="password" type="password" autocomplete="current-password">
    <input type="hidden" name="csrf_token" value="{{{{ csrf_token }}}}">
  </form>
</body>
</html>
"""),
        ("web/styles.css", f"""/* Brand colours and the inline badge. */
:root {{
  --brand: #1a2b3c;
  --accent: #e3b0c4;
  --muted: #9aa5b1;
}}

.badge {{
  background-image: url("data:image/png;base64,{badge}");
  color: #fff;
}}
"""),
        ("docs/branding.md", f"""# Branding

The small logo is inlined so the docs render offline:

![logo](data:image/png;base64,{logo})

Primary colour `#1a2b3c`, accent `#e3b0c4`.
"""),
        ("src/nlp/tokenize.py", '''"""Tokenization helpers for the ranker."""

from pathlib import Path

from transformers import AutoTokenizer

MODEL_DIR = Path(__file__).parent / "models" / "minilm"  # shipped with the package: no hub at run time
tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
token_type = "Bearer"
max_tokens = 512
pad_token = "[PAD]"
secret_name = "prod/ranker"


def encode(text: str) -> list[int]:
    tokens = tokenizer(text, truncation=True, max_length=max_tokens)
    token_ids = tokens["input_ids"]
    return token_ids


def password_field(form: dict) -> str:
    return form["password"]
'''),
        ("config/locales/en.yml", """en:
  auth:
    password_label: "Password"
    password_hint: "At least 12 characters"
    forgot_password: "Forgot your password?"
    token_expired: "Your session token has expired, please sign in again"
    api_key_hint: "Paste your API key here"
    secret_question: "What was the name of your first pet?"
"""),
        (".env.example", """# Copy to .env and fill in.
API_KEY=changeme
SECRET=${SECRET}
STRIPE_SECRET_KEY=<your-key>
DATABASE_URL=postgres://user:password@localhost:5432/app
JWT_SECRET=
GITHUB_TOKEN=your_github_token
"""),
        ("Dockerfile", """FROM node:20-alpine AS build
ARG TOKEN
ARG NPM_TOKEN
WORKDIR /src
COPY package.json .
RUN --mount=type=secret,id=npm_token NPM_TOKEN=$(cat /run/secrets/npm_token) npm install
COPY . .
RUN npm run build
"""),
        ("deploy/k8s/configmap.yaml", """apiVersion: v1
kind: ConfigMap
metadata:
  name: api-config
  namespace: prod
data:
  LOG_LEVEL: info
  FEATURE_FLAGS: "search-v2,rerank"
  TOKEN_TTL_SECONDS: "3600"
  app.properties: |
    cache.size=512
    search.top_k=10
"""),
    ]
