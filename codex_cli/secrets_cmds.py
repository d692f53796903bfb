"""``feriactl secrets scan REPO`` (wired by ``register(subparsers)``): what ingestion would mask.

Lists every secret the masker would replace in a repository's tracked files — file, line, rule and
the masked line as a preview, never the value — so a user can check a repository before indexing
it. Local only: a path to a git repository, or the name of one registered in CODEX_HOME; a clone
URL is refused (a scan never fetches). Exit code 0 whether or not anything is found: it is a
report. No dagster, no torch: the command is instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from codex_cli.common import CliError
from codex_cli.common import emit as _emit
from codex_cli.common import home as _home
from codex_core.git import GitError, is_url
from codex_core.home import REPO_NAME_RE


def resolve_repo(target: str) -> tuple[Path, str | None]:
    """The git work tree to scan for ``target``, and the registered name it was found under (if any).

    A bare name registered in CODEX_HOME wins over a directory of the same name in the current
    directory (write ``./NAME`` for that); anything else is a path.
    """
    from codex_core.git import RepoRegistry, local_worktree

    if is_url(target):
        raise CliError(
            f"{target} is a clone URL: a scan never fetches. Clone it and scan the path, "
            "or ingest it (feriactl ingest URL) and scan it by its registered name"
        )
    if REPO_NAME_RE.match(target) and ".." not in target:
        home = _home()
        entry = RepoRegistry(home.registry_path).all().get(target)
        if entry is not None:
            if not is_url(entry.source):
                return _worktree(local_worktree, entry.source), target
            checkout = home.checkout_dir(target)
            if (checkout / ".git").exists():
                return checkout, target  # ingestion's clone of the URL: scanned as it is, no fetch
            raise CliError(f"repository {target!r} was registered from {entry.source} and has no local "
                           "checkout yet: run feriactl ingest first, or clone it and scan the path")
        if not Path(target).expanduser().exists():
            raise CliError(f"{target!r} is neither a path nor a repository registered in {home.root} "
                           "(feriactl status lists them)")
    return _worktree(local_worktree, target), None


def _worktree(local_worktree, source: str) -> Path:
    try:
        return local_worktree(source)
    except GitError as exc:
        raise CliError(str(exc)) from exc


def _format(data: dict[str, Any]) -> str:
    findings = data["findings"]
    locations = [f"{f['path']}:{f['line']}".translate(_UNPRINTABLE) for f in findings]
    loc_width = min(max(map(len, locations), default=0), 60)
    rule_width = max((len(f["rule"]) for f in findings), default=0)
    lines = [f"{loc:<{loc_width}}  {f['rule']:<{rule_width}}  {f['preview']}"
             for loc, f in zip(locations, findings, strict=True)]
    skipped = ", ".join(f"{k}={v}" for k, v in data["skipped_by_reason"].items())
    rules = ", ".join(f"{k}={v}" for k, v in data["findings_by_rule"].items())
    where = data["repo"] + (f" (registered as {data['registered_as']})" if data.get("registered_as") else "")
    lines.append(
        f"{_count(data['findings_total'], 'finding')}{f' ({rules})' if rules else ''} in "
        f"{_count(data['files_with_findings'], 'file')}; {_count(data['files_scanned'], 'file')} scanned, "
        f"{data['files_skipped']} skipped{f' ({skipped})' if skipped else ''} — "
        f"{where} @ {data['commit'][:12]}, masker v{data['masker_version']}"
    )
    return "\n".join(lines)


# Paths are printed one per line: a control character in a file name must not break that.
_UNPRINTABLE = {c: "\ufffd" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x200E, 0x200F,
                                      *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_scan(args: argparse.Namespace) -> int:
    from codex_core.secret_scan import scan_secrets

    repo, name = resolve_repo(args.repo)
    try:
        report = scan_secrets(repo, args.commit)
    except GitError as exc:
        raise CliError(str(exc)) from exc
    data = report.to_dict()
    if name:
        data["registered_as"] = name
    _emit(args, data, _format(data))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``secrets`` and its subcommands to feriactl's top-level subparsers."""
    secrets = subparsers.add_parser("secrets", help="what secret masking would redact in a repository")
    sub = secrets.add_subparsers(dest="secrets_command", required=True)

    p = sub.add_parser(
        "scan", help="list what ingestion would mask (file, line, rule, masked preview; never the value)",
        description="Scan the tracked files of a local git repository at a commit, selected and masked "
                    "exactly as ingestion does, and list every secret that would be masked. "
                    "Exit code 0 whether or not anything is found.",
    )
    p.add_argument("repo", metavar="REPO", help="path to a local git repository, or a name registered in "
                                                "CODEX_HOME (feriactl status); clone URLs are refused")
    p.add_argument("--commit", metavar="SHA", help="commit, branch or tag to scan (default: HEAD)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=cmd_scan)
