"""Find and mask secrets in source and configuration text, keeping every line where it was.

Masking replaces the secret part of a line with ``«redacted:<kind>»`` and nothing else: the text
keeps exactly as many ``"\\n"`` as before, so line numbers, chunk spans and citations computed on
the masked text point at the same lines as in the original file. It is deterministic (same input,
same output) and idempotent (masking masked text changes nothing), so ingestion and citation
verification can each mask the same file independently and get the same hash.

Detectors (one module each):

- ``rules``: credential shapes that are secret wherever they appear — the families of gitleaks'
  default rules (cloud, VCS/CI, package registries, chat/webhooks, payment, SaaS/AI APIs, JWTs,
  credentials in headers, ``curl -u`` and URLs). Masked even when obviously fake: a shape cannot
  tell a documented example from a live key, and masking a fake one costs nothing.
- ``keys``: private keys of every PEM/OpenSSH/PGP form (markers kept, body masked line by line;
  one-line ``\\n``-escaped keys in JSON) and PuTTY ``.ppk`` files.
- ``names``: key-aware detection — the value assigned to a credential-looking name in code, JSON,
  YAML, TOML, INI, ``.env``, properties, shell, Dockerfile or XML; the name stays. In configuration
  and credential files (``names.is_structured_path``) ``auth`` and ``*_key_id`` count as credential
  names too; in source code their value must also look random (entropy as a tie-breaker only).
- ``structured``: connection strings (``Password=…;``, ``?password=``/``&sig=`` in URLs),
  ``.netrc``, YAML block scalars under a credential name, Kubernetes ``kind: Secret`` data, and
  Terraform state (sensitive attributes and outputs).

Not masked (false-positive policy, details in docs/security.md): non-literals (calls, subscripts,
attribute chains, ``${VAR}``/``{{ x }}``/``<your-key>`` references), placeholders (``changeme``,
all-``x``, values naming what they stand for), numbers of non-password names, prose, names that only
describe a secret (``token_url``, ``max_tokens``, ``*_file``), and random strings under ordinary
names (git shas, hashes, UUIDs, lockfile integrity hashes).

``path`` decides how unquoted assignments are read: configuration-shaped lines are masked, lines of
source files are not (there an unquoted value is a variable). Callers that mask the same file twice
(ingestion and citation verification) must pass the same ``path`` both times.
"""

from codex_core.secrets._spans import REDACTED_PREFIX, redaction
from codex_core.secrets.masker import MASKER_VERSION, SecretFinding, contains_secret, mask_secrets, redact
from codex_core.secrets.rules import KIND_FAMILY, SECRET_KINDS, Family

__all__ = [
    "KIND_FAMILY",
    "MASKER_VERSION",
    "REDACTED_PREFIX",
    "SECRET_KINDS",
    "Family",
    "SecretFinding",
    "contains_secret",
    "mask_secrets",
    "redact",
    "redaction",
]
