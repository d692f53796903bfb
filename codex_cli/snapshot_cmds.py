"""``feriactl snapshot create | list | verify | restore | prune`` (wired by ``register(subparsers)``).

Keys come from the environment when a command runs: ``CODEX_SNAPSHOT_KEY`` signs and verifies,
``CODEX_SNAPSHOT_PREVIOUS_KEYS`` (comma-separated) verifies snapshots signed before a rotation.
"""

from __future__ import annotations

import argparse
from typing import Any

from codex_cli.common import CliError
from codex_cli.common import emit as _emit
from codex_cli.common import home as _home
from codex_core.home import validate_repo_name

# Literals rather than imports: codex_core.snapshot pulls in pandas, and `feriactl --help` must stay instant.
KEY_ENV = "CODEX_SNAPSHOT_KEY"
RELEASE_TAG = "release"
COMPRESSIONS = ("none", "gz")


def _keys() -> list[bytes]:
    from codex_core.snapshot import SnapshotError, keys_from_env

    try:
        return keys_from_env()
    except SnapshotError as exc:
        raise CliError(f"{KEY_ENV}: {exc}") from exc


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def cmd_create(args: argparse.Namespace) -> int:
    from codex_core.snapshot import SnapshotError, create_snapshot

    home = _home()
    validate_repo_name(args.repo)
    keys = _keys()
    if not keys and not args.unsigned:
        raise CliError(
            f"no snapshot key: export {KEY_ENV}=... (e.g. $(python -c 'import secrets; print(secrets.token_hex(32))')"
            ", and keep a copy: restoring needs it) or pass --unsigned explicitly"
        )
    try:
        info = create_snapshot(
            home, args.repo, key=keys[0] if keys and not args.unsigned else None,
            out_dir=home.snapshots_dir / args.repo, tags=args.tag or (), allow_unsigned=args.unsigned,
            compression=args.compression,
        )
    except SnapshotError as exc:
        raise CliError(str(exc)) from exc
    signed = f"signed with key {info.key_id}" if info.signed else "UNSIGNED"
    human = (
        f"snapshot {info.id}\n  {info.path}\n  {_mib(info.size)}, {info.files} files, {signed}, "
        f"{info.seconds:.2f} s\n  {info.repo} @ {info.commit[:12]}  index version {info.index_version}"
        + (f"  tags {', '.join(info.tags)}" if info.tags else "")
    )
    _emit(args, info.to_dict(), human)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from codex_core.snapshot import list_snapshots

    home = _home()
    infos = list_snapshots(home.snapshots_dir, repo=args.repo)
    lines = [f"{len(infos)} snapshots under {home.snapshots_dir}"]
    for i in infos:
        if i.problem:
            lines.append(f"  {i.id:<48} UNREADABLE: {i.problem}")
            continue
        tags = f"  [{', '.join(i.tags)}]" if i.tags else ""
        sign = f"key {i.key_id}" if i.signed else "UNSIGNED"
        stale = f"  STALE MASKING (masker v{i.masker_version or 1})" if i.stale_masking else ""
        lines.append(f"  {i.id:<48} {i.created_at[:19]}  {_mib(i.size):>10}  {sign}{tags}{stale}")
    if not infos:
        lines.append("  none yet: feriactl snapshot create --repo NAME")
    _emit(args, [i.to_dict() for i in infos], "\n".join(lines))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from codex_core.snapshot import SnapshotError, SnapshotRejected, find_snapshot, verify_snapshot

    home = _home()
    try:
        path = find_snapshot(home.snapshots_dir, args.snapshot)
    except SnapshotError as exc:
        raise CliError(str(exc)) from exc
    try:
        report = verify_snapshot(path, _keys(), allow_unsigned=args.allow_unsigned)
    except SnapshotRejected as exc:
        failure: dict[str, Any] = {"ok": False, "path": str(path), "reason": exc.reason, "error": str(exc)}
        _emit(args, failure, f"FAILED  {exc}")
        return 1
    except SnapshotError as exc:
        raise CliError(str(exc)) from exc
    signed = f"signature OK (key {report.key_id})" if report.signed else "UNSIGNED (allowed)"
    _emit(args, report.to_dict(), f"OK  {report.id}: {signed}, {report.files_checked} files / "
                                  f"{_mib(report.bytes_checked)} match the manifest ({report.seconds:.2f} s)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from codex_core.snapshot import SnapshotError, find_snapshot, restore_snapshot

    home = _home()
    try:
        path = find_snapshot(home.snapshots_dir, args.snapshot)
        report = restore_snapshot(home, path, _keys(), allow_unsigned=args.allow_unsigned)
    except SnapshotError as exc:
        raise CliError(str(exc)) from exc
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items())
    lines = [
        f"restored {report.repo} @ {report.commit[:12]}: index version {report.index_version} is published "
        f"({report.points} points; previously {report.previous_version or 'none'})",
        f"  {report.files_installed} files installed, embeddings {report.embeddings_added} added / "
        f"{report.embeddings_in_snapshot} in snapshot, registry {report.registry}",
        f"  {phases}",
    ]
    lines += [f"  warning: {w}" for w in report.warnings]
    _emit(args, report.to_dict(), "\n".join(lines))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from codex_core.snapshot import apply_retention

    home = _home()
    directory = home.snapshots_dir / validate_repo_name(args.repo) if args.repo else home.snapshots_dir
    deleted = apply_retention(directory, keep_daily=args.keep_daily, keep_releases=not args.drop_releases,
                              drop_stale_masking=args.stale_masking)
    _emit(args, {"deleted": [str(p) for p in deleted]},
          f"deleted {len(deleted)} snapshots" + "".join(f"\n  {p.name}" for p in deleted))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``snapshot`` and its subcommands to feriactl's top-level subparsers."""
    snap = subparsers.add_parser("snapshot", help="signed snapshots of a repository's index: create, verify, restore")
    sub = snap.add_subparsers(dest="snapshot_command", required=True)

    p = sub.add_parser("create", help=f"archive the published state of a repo (signed with ${KEY_ENV})")
    p.add_argument("--repo", required=True)
    p.add_argument("--tag", action="append", help=f"tag it (repeatable); '{RELEASE_TAG}' is never pruned")
    p.add_argument("--unsigned", action="store_true", help="create without a key (verify/restore then need "
                                                           "--allow-unsigned)")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none",
                   help="none (default: fastest; sparse files stay small) or gz (~25%% smaller, ~10x slower)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("list", help="snapshots under CODEX_HOME/snapshots, oldest first")
    p.add_argument("--repo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    for name, func, text in (
        ("verify", cmd_verify, "check signature, every file's sha256, and refuse hostile members"),
        ("restore", cmd_restore, "verify, then install atomically and publish the snapshot's index version"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("snapshot", metavar="ID_OR_PATH", help="snapshot id (file name without extension) or path")
        p.add_argument("--allow-unsigned", action="store_true", help="accept a snapshot created with --unsigned")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("prune", help="retention: newest snapshot of each of the last N days, plus releases")
    p.add_argument("--repo")
    p.add_argument("--keep-daily", type=int, default=7)
    p.add_argument("--drop-releases", action="store_true", help="also prune snapshots tagged release")
    p.add_argument("--stale-masking", action="store_true",
                   help="also delete every snapshot masked by an older secret masker (releases too): after an "
                        "upgrade they may hold credentials the current rules mask")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune)
