"""Keys and signatures: HMAC-SHA256 over the canonical manifest, key fingerprints, key rotation.

The scheme is shared: snapshots and the evidence of sandbox agent runs
(:mod:`codex_core.sandbox.evidence`) sign with it. :func:`match_signature` says what a signature
is worth under the keys given, as a value; :func:`check_signature` turns that into the
snapshot's refusal.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codex_core.settings import Settings
from codex_core.snapshot.format import (
    ALGORITHM,
    KEY_ENV,
    MIN_KEY_BYTES,
    PREVIOUS_KEYS_ENV,
    SnapshotError,
    SnapshotRejected,
    canonical_json,
)


def key_fingerprint(key: bytes) -> str:
    """Names a key without revealing it (12 hex characters)."""
    return hashlib.sha256(b"codex-snapshot-key:" + key).hexdigest()[:12]


def as_keys(key: bytes | str | Sequence[bytes | str] | None) -> list[bytes]:
    if key is None:
        return []
    raw = [key] if isinstance(key, bytes | str) else list(key)
    keys = [k.encode("utf-8") if isinstance(k, str) else bytes(k) for k in raw]
    for k in keys:
        if len(k) < MIN_KEY_BYTES:
            raise SnapshotError(
                f"snapshot key too short ({len(k)} bytes, need at least {MIN_KEY_BYTES}); generate one with: "
                "python -c 'import secrets; print(secrets.token_hex(32))'"
            )
    return keys


def parse_key(value: bytes | str) -> bytes:
    """A signing key from its configured form (a string is used as UTF-8 bytes); refuses short keys."""
    return as_keys(value)[0]


def keys_from_env(environ: Mapping[str, str] | None = None) -> list[bytes]:
    """``CODEX_SNAPSHOT_KEY`` (signs and verifies) then ``CODEX_SNAPSHOT_PREVIOUS_KEYS`` (comma-separated,
    verify/restore only: keys retired by a rotation), through the settings. Read when a command
    runs, never at import."""
    settings = Settings.from_env(environ)
    current = settings.snapshot_key.get_secret_value() if settings.snapshot_key else ""
    previous = settings.snapshot_previous_keys.get_secret_value() if settings.snapshot_previous_keys else ""
    values = [current] + previous.split(",")
    return as_keys([v.strip() for v in values if v.strip()])


# What a signature is worth under the keys given (SignatureMatch.status).
VALID, UNSIGNED, MALFORMED, NO_KEY, UNKNOWN_KEY, INVALID_HMAC = (
    "valid", "unsigned", "malformed", "no key", "unknown key", "invalid hmac",
)


@dataclass(frozen=True)
class SignatureMatch:
    status: str  # valid | unsigned | malformed | no key | unknown key | invalid hmac
    key_id: str | None  # valid: the key that matched; otherwise the key the signature names (None: none)


def _mac(manifest: Mapping[str, Any], key: bytes) -> str:
    return hmac.new(key, canonical_json(manifest), hashlib.sha256).hexdigest()


def sign_manifest(manifest: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
    if key is None:
        return {"algorithm": "none"}
    return {"algorithm": ALGORITHM, "hmac": _mac(manifest, key), "key_id": key_fingerprint(key)}


def match_signature(manifest: Mapping[str, Any], signature: Mapping[str, Any], keys: list[bytes]) -> SignatureMatch:
    """Check ``signature`` (a :func:`sign_manifest` result) over ``manifest`` against each key in turn."""
    named = signature.get("key_id")
    named = named if isinstance(named, str) else None
    algorithm = signature.get("algorithm")
    if algorithm == "none":
        return SignatureMatch(UNSIGNED, None)
    mac = signature.get("hmac")
    if algorithm != ALGORITHM or not isinstance(mac, str) or not mac.isascii():  # compare_digest refuses non-ASCII
        return SignatureMatch(MALFORMED, named)
    if not keys:
        return SignatureMatch(NO_KEY, named)
    for key in keys:
        if hmac.compare_digest(_mac(manifest, key), mac):
            return SignatureMatch(VALID, key_fingerprint(key))
    if named not in {key_fingerprint(k) for k in keys}:
        return SignatureMatch(UNKNOWN_KEY, named)
    return SignatureMatch(INVALID_HMAC, named)


def check_signature(
    path: Path, manifest: Mapping[str, Any], signature: Mapping[str, Any], keys: list[bytes], allow_unsigned: bool
) -> str | None:
    match = match_signature(manifest, signature, keys)
    if match.status == VALID:
        return match.key_id
    if match.status == UNSIGNED:
        if not allow_unsigned:
            raise SnapshotRejected(
                path, "unsigned",
                "it is unsigned (created with --unsigned); pass --allow-unsigned if you trust its origin",
            )
        return None
    if match.status == MALFORMED:
        raise SnapshotRejected(path, "malformed", f"unknown signature algorithm {signature.get('algorithm')!r}")
    if match.status == NO_KEY:
        raise SnapshotRejected(
            path, "key", f"it is signed (key {signature.get('key_id')}) but no key was given: set {KEY_ENV}"
        )
    if match.status == UNKNOWN_KEY:
        given = ", ".join(key_fingerprint(k) for k in keys)
        raise SnapshotRejected(
            path, "key",
            f"it was signed with key {signature.get('key_id')} but the key(s) given are {given}: set {KEY_ENV} to "
            f"the key that signed it (after a rotation, list old keys in {PREVIOUS_KEYS_ENV})",
        )
    raise SnapshotRejected(path, "hmac", "HMAC mismatch: manifest.json was modified after it was signed")
