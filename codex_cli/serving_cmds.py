"""``feriactl`` commands for operating the query API: tenants, kill-switch, canary, simulate.

Wired into ``codex_cli.main.build_parser()`` with ``serving_cmds.register(sub)``. Each command
edits a file under ``CODEX_HOME/serving/`` (the kill-switch: the shared serving state,
``serving/shared_state.py``) that a running server re-reads on its next request, so none of them
needs a restart. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _cli():
    from codex_cli import common

    return common


def _state_dir() -> Path:
    return _cli().home().serving_state_dir


# ---------------------------------------------------------------- tenants


def cmd_tenants_add(args: argparse.Namespace) -> int:
    from serving.auth import ALL_REPOS, TenantError, TenantStore

    repos = [r.strip() for r in (args.repos or ALL_REPOS).split(",") if r.strip()]
    store = TenantStore(_state_dir() / "tenants.json")
    first = not store.exists()
    try:
        key = store.add(args.name, args.role, repos)
    except TenantError as exc:
        raise _cli().CliError(str(exc)) from exc
    data = {"tenant": args.name, "role": args.role, "repos": sorted(set(repos)), "api_key": key}
    human = [
        f"tenant {args.name} ({args.role}) may query: {', '.join(data['repos'])}",
        f"API key (shown once, store it now): {key}",
        "use it as: Authorization: Bearer <key>   or   X-API-Key: <key>",
    ]
    if first:
        human.append("auth is now REQUIRED on the query API (tenants.json exists); every caller needs a key")
    _cli().emit(args, data, "\n".join(human))
    return 0


def cmd_tenants_add_key(args: argparse.Namespace) -> int:
    from serving.auth import TenantError, TenantStore

    try:
        key = TenantStore(_state_dir() / "tenants.json").add_key(args.name)
    except TenantError as exc:
        raise _cli().CliError(str(exc)) from exc
    _cli().emit(args, {"tenant": args.name, "api_key": key}, f"new API key for {args.name} (shown once): {key}")
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    from serving.auth import TenantStore, auth_mode

    store = TenantStore(_state_dir() / "tenants.json")
    listing = store.listing()
    mode = auth_mode(store)
    lines = [f"auth mode: {mode}" + ("" if listing else " (no tenants: local single-user mode)")]
    lines += [f"  {t['tenant']:<24} {t['role']:<8} keys={t['keys']}  repos={','.join(t['repos'])}" for t in listing]
    _cli().emit(args, {"auth_mode": mode, "tenants": listing}, "\n".join(lines))
    return 0


def cmd_tenants_remove(args: argparse.Namespace) -> int:
    from serving.auth import TenantError, TenantStore

    try:
        TenantStore(_state_dir() / "tenants.json").remove(args.name)
    except TenantError as exc:
        raise _cli().CliError(str(exc)) from exc
    _cli().emit(args, {"removed": args.name}, f"removed tenant {args.name}; its keys stop working now")
    return 0


# ---------------------------------------------------------------- kill-switch


def cmd_kill_switch(args: argparse.Namespace) -> int:
    from codex_core.settings import Settings
    from serving.killswitch import KillSwitch
    from serving.shared_state import StateStoreUnavailable

    # The shared serving state the replicas read (CODEX_SERVING_STATE_URL, else CODEX_DAGSTER_PG_URL, else
    # sqlite under CODEX_HOME/serving): every replica sees the change on its next request.
    state_dir = _state_dir()
    switch = KillSwitch.for_serving(Settings.from_env(), state_dir)
    try:
        if args.state == "status":
            state = switch.state()
        else:
            state = switch.set(args.state == "on", args.reason or "", set_by=f"cli:{os.environ.get('USER', '?')}")
    except StateStoreUnavailable as exc:
        raise _cli().CliError(f"{exc} (run this where the serving replicas' settings are set)") from exc
    human = (f"kill-switch ON: {state.reason} (since {state.set_at}); /v1/query answers 503"
             if state.on else "kill-switch off: queries are served")
    _cli().emit(args, state.to_dict(), human)
    return 0


# ---------------------------------------------------------------- canary


def promote_callback(config_id: str, canary: dict[str, Any]) -> None:
    """Called after `feriactl canary promote`: the promoted config becomes the MLflow ``champion``
    (the API does the same through ``create_app``'s default callback)."""
    from codex_core.champion import ChampionService

    ChampionService.for_home(_cli().home()).promote_config(config_id)


def _canary_store():
    from codex_core.configs import ConfigStore
    from serving.canary import CanaryStore

    home = _cli().home()
    return CanaryStore(home.serving_state_dir, ConfigStore(home.configs_dir), promote_callback)


def _format_canary(status: dict[str, Any]) -> str:
    lines = [f"champion config: {status['champion'] or 'built-in default'}   status: {status['status']}"]
    canary = status.get("canary")
    if canary:
        lines.append(
            f"canary {canary['id']}: challenger {canary['challenger']} at {canary['traffic']:g}% "
            f"(started {canary['started_at']}{', ended ' + canary['ended_at'] if canary.get('ended_at') else ''})"
        )
        if canary.get("reason"):
            lines.append(f"  reason: {canary['reason']}")
        for arm, s in canary["arms"].items():
            p95 = "-" if s["p95_s"] is None else f"{s['p95_s'] * 1000:.0f} ms"
            lines.append(
                f"  {arm:<10} requests={s['requests']:<6} errors={s['error_rate']:.1%}  "
                f"abstained={s['abstention_rate']:.1%}  p95={p95}"
            )
    return "\n".join(lines)


def cmd_canary(args: argparse.Namespace) -> int:
    from serving.canary import CanaryError, Thresholds

    store = _canary_store()
    try:
        if args.canary_command == "start":
            thresholds = Thresholds(min_samples=args.min_samples)
            store.start(args.config, args.traffic, thresholds)
        elif args.canary_command == "promote":
            store.promote(args.reason or "promoted by the operator")
        elif args.canary_command == "rollback":
            store.rollback(args.reason or "rolled back by the operator")
    except CanaryError as exc:
        raise _cli().CliError(str(exc)) from exc
    status = store.status()
    _cli().emit(args, status, _format_canary(status))
    return 0


# ---------------------------------------------------------------- simulate


def cmd_simulate(args: argparse.Namespace) -> int:
    from serving import loadgen

    home = _cli().home()
    mix = loadgen.parse_mix(args.mix)
    levels = [float(x) for x in args.sweep.split(",")] if args.sweep else loadgen.default_levels(args.qps)
    out_dir = Path(args.out or home.root / "simulate")
    from codex_core.settings import Settings

    configured = Settings.from_env().api_key
    api_key = args.api_key or (configured.get_secret_value() if configured else None)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    queries = loadgen.DEFAULT_QUERIES
    if args.queries:
        queries = tuple(q.strip() for q in Path(args.queries).read_text().splitlines() if q.strip())

    def drive(url: str) -> list[loadgen.LevelResult]:
        return loadgen.sweep(url, levels, args.duration, mix=mix, queries=queries, tenants=args.tenants,
                             headers=headers)

    if args.url:
        results = drive(args.url.rstrip("/"))
    else:
        env = {**os.environ, "CODEX_HOME": str(home.root)}
        if args.extractive:
            env["OLLAMA_HOST"] = f"http://127.0.0.1:{loadgen.free_port()}"  # nothing listens: extractive answers
        print(f"starting the query API on 127.0.0.1 (log: {out_dir / 'api.log'}) ...", file=sys.stderr)
        with loadgen.LocalServer(env, out_dir / "api.log") as server:
            results = drive(server.url)
    csv_path = loadgen.write_csv(results, out_dir / "simulate.csv")
    png_path = loadgen.plot(results, out_dir / "simulate.png")
    sustainable = [r.qps_target for r in results if r.sustainable]
    data = {"csv": str(csv_path), "png": str(png_path), "levels": [r.__dict__ | {"errors": r.errors}
                                                                      for r in results],
            "max_sustainable_qps": max(sustainable) if sustainable else None}
    header = f"{'qps':>6} {'sent':>5} {'200':>5} {'429':>5} {'5xx':>4} {'p50 ms':>8} {'p95 ms':>8}"
    rows = [
        f"{r.qps_target:>6g} {r.sent:>5} {r.ok:>5} {r.throttled_429:>5} {r.errors:>4} "
        f"{r.p50_ms if r.p50_ms is not None else '-':>8} {r.p95_ms if r.p95_ms is not None else '-':>8}"
        for r in results
    ]
    _cli().emit(args, data, "\n".join([header, *rows, f"CSV {csv_path}", f"PNG {png_path}",
                                        f"max sustainable QPS (no 429/5xx, P95 <= 1.5 s): "
                                        f"{data['max_sustainable_qps']}"]))
    return 0 if not any(r.errors_5xx for r in results) else 1


# ---------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction) -> None:
    """Add tenants, kill-switch, canary and simulate to ``feriactl``'s subcommands."""
    tenants = sub.add_parser("tenants", help="API keys and roles of the query API's tenants")
    t_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    p = t_sub.add_parser("add", help="create a tenant and print its API key once")
    p.add_argument("name")
    p.add_argument("--role", choices=("admin", "analyst", "user"), required=True)
    p.add_argument("--repos", help="comma-separated repositories it may query (default: all, '*')")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tenants_add)
    p = t_sub.add_parser("add-key", help="issue another key for an existing tenant (rotation)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tenants_add_key)
    p = t_sub.add_parser("list", help="tenants, roles, repositories, number of keys")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tenants_list)
    p = t_sub.add_parser("remove", help="delete a tenant and all its keys")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tenants_remove)

    p = sub.add_parser("kill-switch", help="stop (on) or resume (off) answering queries at once")
    p.add_argument("state", choices=("on", "off", "status"))
    p.add_argument("--reason", help="shown to callers in the 503 and in /v1/health")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_kill_switch)

    canary = sub.add_parser("canary", help="route a share of queries to a challenger AnswerConfig")
    c_sub = canary.add_subparsers(dest="canary_command", required=True)
    p = c_sub.add_parser("start", help="start a canary of config ID at --traffic percent")
    p.add_argument("--config", required=True, help="AnswerConfig id (feriactl config list)")
    p.add_argument("--traffic", type=float, default=10.0, help="percent of queries for the challenger (0-50]")
    p.add_argument("--min-samples", type=int, default=30, help="per arm, before automatic rollback may trigger")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_canary)
    for name, text in (("status", "per-arm error rate, P95, abstention rate"),
                       ("promote", "make the challenger the serving champion"),
                       ("rollback", "stop the canary; the champion keeps serving")):
        p = c_sub.add_parser(name, help=text)
        if name != "status":
            p.add_argument("--reason")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_canary)

    p = sub.add_parser("simulate", help="drive the query API at several QPS levels; write CSV + PNG")
    p.add_argument("--qps", type=float, required=True, help="centre of the sweep: runs QPS/2, QPS and 2xQPS")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    p.add_argument("--mix", default="fast=80,batch=20", help="queue shares, e.g. fast=80,batch=20")
    p.add_argument("--sweep", help="explicit comma-separated QPS levels instead of QPS/2,QPS,2xQPS")
    p.add_argument("--url", help="endpoint to drive (default: start one on 127.0.0.1 over CODEX_HOME)")
    p.add_argument("--extractive", action="store_true", help="started server: no LLM, extractive answers")
    p.add_argument("--tenants", type=int, default=4, help="open mode: spread requests over N tenant names")
    p.add_argument("--api-key", help="auth mode: key to send (or $CODEX_API_KEY; requests count as its tenant)")
    p.add_argument("--queries", help="file with one question per line (default: built-in generic questions)")
    p.add_argument("--out", help="directory for simulate.csv / simulate.png (default: CODEX_HOME/simulate)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)
