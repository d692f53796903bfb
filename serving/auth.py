"""Tenants and their API keys: who is calling, what role they have, which repositories they may see.

State lives in ``CODEX_HOME/serving/tenants.json``::

    {"tenants": {"NAME": {"role": "admin|analyst|user", "repos": ["a", "b"] | ["*"],
                          "key_hashes": ["sha256$<key id>$<salt hex>$<digest hex>", ...],
                          "created_at": "..."}}}

Keys look like ``pcx_<key id>_<secret>``: 8 hex characters of key id, then 32 random bytes
(url-safe base64). Only a salted sha256 of the whole key is stored. The keys are random with 256
bits of entropy, so a slow password hash (scrypt) would add ~50 ms to every request and no
security; the key id lets a lookup verify exactly one hash instead of every tenant's.

Auth mode: ``required`` as soon as tenants.json exists (or ``CODEX_AUTH=required``); ``open``
otherwise — the local single-user mode, where every caller acts as the admin tenant ``local``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core.fsio import ReloadingFile, locked_edit
from codex_core.home import is_valid_name
from codex_core.settings import Settings

ROLES = ("admin", "analyst", "user")
ALL_REPOS = "*"
LOCAL_TENANT = "local"
KEY_PREFIX = "pcx_"
_KEY_RE = re.compile(r"^pcx_([0-9a-f]{8})_[A-Za-z0-9_-]{20,}$")


class TenantError(ValueError):
    """A tenant operation the operator can correct (bad name, role, duplicate)."""


@dataclass(frozen=True)
class Tenant:
    name: str
    role: str
    repos: tuple[str, ...]  # ("*",) = every repository

    @property
    def all_repos(self) -> bool:
        return ALL_REPOS in self.repos

    def may_see(self, repo: str) -> bool:
        return self.all_repos or repo in self.repos

    def visible(self, repos: Iterable[str]) -> list[str]:
        return sorted(r for r in repos if self.may_see(r))

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_read_operations(self) -> bool:
        """Analysts read canary state, tenants and everyone's traces; only admins change anything."""
        return self.role in ("admin", "analyst")


LOCAL = Tenant(LOCAL_TENANT, "admin", (ALL_REPOS,))


def validate_tenant_name(name: str) -> str:
    if not is_valid_name(name):
        raise TenantError(
            f"invalid tenant name {name!r}: use 1-64 characters from [A-Za-z0-9._-], starting with a letter or digit"
        )
    return name


def hash_key(key: str, *, salt: bytes | None = None) -> str:
    match = _KEY_RE.match(key)
    if match is None:
        raise TenantError("not a Precision Codex API key (expected pcx_<id>_<secret>)")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.sha256(salt + key.encode()).hexdigest()
    return f"sha256${match.group(1)}${salt.hex()}${digest}"


def new_key() -> str:
    return f"{KEY_PREFIX}{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TenantStore:
    """tenants.json, re-read when its stamp changes (the CLI edits it while serving runs)."""

    def __init__(self, path: Path):
        self.path = path
        # (tenants, key id -> [(tenant, salt, digest)])
        self._tables = ReloadingFile(path, self._parse, ({}, {}))

    # ------------------------------------------------------------ reading

    def exists(self) -> bool:
        return self.path.exists()

    def _raw(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"tenants": {}}
        return json.loads(self.path.read_text())

    @staticmethod
    def _parse(path: Path) -> tuple[dict[str, Tenant], dict[str, list[tuple[str, bytes, str]]]]:
        tenants: dict[str, Tenant] = {}
        by_key: dict[str, list[tuple[str, bytes, str]]] = {}
        for name, entry in json.loads(path.read_text()).get("tenants", {}).items():
            tenants[name] = Tenant(name, entry["role"], tuple(entry.get("repos") or ()))
            for stored in entry.get("key_hashes", []):
                scheme, key_id, salt, digest = stored.split("$")
                if scheme == "sha256":
                    by_key.setdefault(key_id, []).append((name, bytes.fromhex(salt), digest))
        return tenants, by_key

    def tenants(self) -> dict[str, Tenant]:
        return dict(self._tables.get()[0])

    def authenticate(self, key: str | None) -> Tenant | None:
        """The tenant owning ``key``, or None. Constant-time digest comparison."""
        if not key:
            return None
        match = _KEY_RE.match(key.strip())
        if match is None:
            return None
        tenants, by_key_id = self._tables.get()
        for name, salt, digest in by_key_id.get(match.group(1), []):
            candidate = hashlib.sha256(salt + key.strip().encode()).hexdigest()
            if hmac.compare_digest(candidate, digest):
                return tenants.get(name)
        return None

    def listing(self) -> list[dict[str, Any]]:
        """What an operator may see: never the hashes."""
        raw = self._raw().get("tenants", {})
        return [
            {"tenant": name, "role": e["role"], "repos": e.get("repos", []), "keys": len(e.get("key_hashes", [])),
             "created_at": e.get("created_at")}
            for name, e in sorted(raw.items())
        ]

    # ------------------------------------------------------------ writing

    def _locked(self) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Read-modify-write under tenants.lock; the file holds key hashes: owner-only (0600)."""
        return locked_edit(self.path, lambda: {"tenants": {}}, indent=2, sort_keys=True, mode=0o600)

    def add(self, name: str, role: str, repos: Iterable[str] = (ALL_REPOS,)) -> str:
        """Create a tenant with one new key; returns the key (shown once, never stored)."""
        validate_tenant_name(name)
        if role not in ROLES:
            raise TenantError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        repos = sorted(set(repos)) or [ALL_REPOS]
        for repo in repos:
            if repo != ALL_REPOS and not is_valid_name(repo):
                raise TenantError(f"invalid repository name {repo!r} in --repos (names as in feriactl status, or '*')")
        key = new_key()
        with self._locked() as data:
            tenants = data.setdefault("tenants", {})
            if name in tenants:
                raise TenantError(
                    f"tenant {name!r} already exists: add a key with `feriactl tenants add-key {name}` "
                    f"or remove it first"
                )
            tenants[name] = {"role": role, "repos": repos, "key_hashes": [hash_key(key)], "created_at": _utc_now()}
        return key

    def add_key(self, name: str) -> str:
        key = new_key()
        with self._locked() as data:
            entry = data.get("tenants", {}).get(name)
            if entry is None:
                raise TenantError(f"no tenant {name!r} (list them: feriactl tenants list)")
            entry.setdefault("key_hashes", []).append(hash_key(key))
        return key

    def remove(self, name: str) -> None:
        with self._locked() as data:
            if data.get("tenants", {}).pop(name, None) is None:
                raise TenantError(f"no tenant {name!r} (list them: feriactl tenants list)")


def auth_mode(store: TenantStore, settings: Settings | None = None) -> str:
    """``required`` when tenants.json exists or CODEX_AUTH=required; else ``open`` (local single user)."""
    if (settings or Settings.from_env()).auth == "required" or store.exists():
        return "required"
    return "open"


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key.strip() if x_api_key else None
