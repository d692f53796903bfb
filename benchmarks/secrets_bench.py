"""Secret masking: throughput against today's masker, and what it masks in ordinary code.

    .venv/bin/python benchmarks/secrets_bench.py REPO [REPO ...] [--commit HEAD]
        [--baseline-rev bb45321 [--baseline-repo .] | --baseline-file PATH] [--out DIR] [--repeat 5]
        [--labels FILE]

REPO is a git work tree or a bare git directory, written ``[NAME=]PATH[@REV]`` (default name: the
directory's name, or its parent's for ``…/repo`` and ``*.git``; default REV: ``--commit``). Files are
read from the git object store at that commit and selected exactly as ingestion selects them
(``codex_core.files``:
same path and content skip rules), then masked by two maskers in the same process:

* current  — the working tree's ``codex_core.secrets``;
* baseline — ``codex_core/secrets.py`` as it was at ``--baseline-rev`` in this repository's history
  (or in ``--baseline-repo``), or the file ``--baseline-file``, loaded as a separate module (a
  single-file module: its imports must be absolute).

Throughput: each masker masks every selected text ``--repeat`` times (after one warm-up pass), the
runs interleaved; min and median seconds, MiB/s and files/s, and the ratio current/baseline. The
baseline is timed twice in the same rounds, and baseline/itself is printed as the run's noise floor.
As context, the part of ingestion the masker sits in: listing + reading blobs + decoding + skip
rules (timed the same way), the masker's share of read+decode+mask, and ``scan_repository`` itself
(the ingestion file stage) with each masker patched in, interleaved the same way.

False positives: every finding of each masker is written as a JSONL row ``{repo, set, path, line,
kind, preview}``; ``preview`` is the line as that masker MASKED it, clipped to 160 characters around
the redaction (the original value is never written). ``set`` is ``indexed`` (what ingestion indexes)
or ``generated`` (what ingestion skips as generated: lockfiles such as package-lock.json, yarn.lock,
go.sum, Cargo.lock, poetry.lock, uv.lock; ``*.min.js``, ``*_pb2.py``, "Code generated … DO NOT EDIT"
files), reported separately because lockfile hashes are the classic false positive. Per repository
and set: files, MiB, lines, findings, masked lines per 10k lines, files with findings, findings by
kind, and the findings only one masker has.

``--labels FILE``: a JSON object written after reviewing the findings, ``"path:line:kind"`` →
``"tp"`` / ``"fp"`` (or ``{"label": "fp", "note": "why"}``), either flat (any repository) or nested
under a repository name. With it the summary adds precision and the FP rate: masked lines holding
an fp finding per 10k lines.

Raw outputs under ``--out`` (default ``benchmarks/out/secrets``): ``<repo>/findings.current.jsonl``,
``<repo>/findings.baseline.jsonl``, ``<repo>/files.jsonl`` (per file: set, bytes, lines, findings
by each masker), ``summary.json`` (with every timed pass) and ``summary.md``; rows sorted, so two runs
can be diffed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from _setup import OUT_DIR, REPO_ROOT  # noqa: E402  (first: sets up the environment)

DEFAULT_BASELINE_REV = "bb45321"  # the commit before the masker's rules were extended (issue #11)
PREVIEW_CHARS = 160
MiB = 1024 * 1024

Masker = Callable[..., tuple[str, list[Any]]]


# --------------------------------------------------------------------------- maskers


def load_masker_module(source: str, label: str) -> ModuleType:
    """``source`` (the text of a secrets.py) as a module of its own, next to ``codex_core.secrets``."""
    name = f"_secrets_bench_{label}"
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix=f"{name}-", delete=False) as handle:
        handle.write(source)
        tmp = Path(handle.name)
    try:
        spec = importlib.util.spec_from_file_location(name, tmp)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    finally:
        tmp.unlink(missing_ok=True)
    return module


def baseline_source(rev: str | None, file: Path | None, repo: Path = REPO_ROOT) -> tuple[str, str]:
    """(secrets.py text, where it came from)."""
    if file is not None:
        return file.read_text(encoding="utf-8"), str(file)
    assert rev is not None
    out = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:codex_core/secrets.py"], capture_output=True)
    if out.returncode != 0:
        raise SystemExit(f"cannot read {rev}:codex_core/secrets.py in {repo}: {out.stderr.decode().strip()}")
    return out.stdout.decode("utf-8"), f"{rev}:codex_core/secrets.py"


def describe(module: ModuleType, source: str, origin: str) -> dict[str, Any]:
    return {
        "origin": origin,
        "masker_version": getattr(module, "MASKER_VERSION", None),
        "sha256": hashlib.sha256(source.encode("utf-8")).hexdigest()[:16],
    }


def current_masker() -> tuple[ModuleType, str, str]:
    """The working tree's ``codex_core.secrets`` (a module or a package), its source and its path."""
    import codex_core.secrets as current

    if not callable(getattr(current, "mask_secrets", None)):
        raise SystemExit("codex_core.secrets has no mask_secrets (is the working tree mid-edit?)")
    file = Path(current.__file__)
    files = sorted(file.parent.rglob("*.py")) if file.name == "__init__.py" else [file]
    if len(files) == 1:
        return current, file.read_text(encoding="utf-8"), str(file.relative_to(REPO_ROOT))
    source = "".join(f"# {f.relative_to(REPO_ROOT)}\n{f.read_text(encoding='utf-8')}" for f in files)
    return current, source, str(file.parent.relative_to(REPO_ROOT))


# --------------------------------------------------------------------------- selection


@dataclass
class Item:
    path: str
    data_bytes: int
    text: str
    set: str  # "indexed" or "generated"

    @property
    def lines(self) -> int:
        return self.text.count("\n") + 1


@dataclass
class Selection:
    commit: str
    indexed: list[Item] = field(default_factory=list)
    generated: list[Item] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def _tracked(repo: Path, commit: str) -> tuple[list[Any], dict[str, str], list[Any]]:
    """(entries ingestion reads, skipped path -> reason, every tree entry), with files.py's own rules:
    ``select_tracked`` where it exists, else the same loop over its (then private) path rule."""
    from codex_core import files as F
    from codex_core.git import ls_tree

    tree = ls_tree(repo, commit)
    if hasattr(F, "select_tracked"):
        entries, skipped = F.select_tracked(repo, commit)
        return entries, skipped, tree
    entries, skipped = [], {}
    for entry in tree:
        reason = "symlink" if entry.is_symlink else F._path_reason(entry, F.MAX_FILE_BYTES)
        if reason:
            skipped[entry.path] = reason
        else:
            entries.append(entry)
    return entries, skipped, tree


def select_files(repo: Path, commit: str, *, with_generated: bool = True) -> Selection:
    """What ``scan_repository`` reads and decodes, minus the masking (``with_generated=False`` is
    exactly that work, and is what gets timed); plus the files it skips as generated (read and
    decoded the same way) as a second set."""
    from codex_core import files as F
    from codex_core.git import read_blobs

    content_reason = getattr(F, "content_skip_reason", None) or F._content_reason
    sel = Selection(commit=commit)
    keep, skipped, tree = _tracked(repo, commit) if with_generated else (*_tracked_fast(repo, commit), [])
    sel.skipped.update(Counter(skipped.values()))
    generated = [e for e in tree if not e.is_symlink and skipped.get(e.path) == F.SkipReason.GENERATED]
    blobs = dict(read_blobs(repo, sorted({e.sha for e in keep + generated})))
    for entry in sorted(keep, key=lambda e: e.path):
        data = blobs[entry.sha]
        text, _ = F.decode(data)
        reason = content_reason(data, text)
        if reason:
            sel.skipped[reason] += 1
            if reason == F.SkipReason.GENERATED:
                sel.generated.append(Item(entry.path, len(data), text, "generated"))
            continue
        sel.indexed.append(Item(entry.path, len(data), text, "indexed"))
    for entry in sorted(generated, key=lambda e: e.path):
        data = blobs[entry.sha]
        if b"\0" in data[:8192]:
            continue  # binary despite its name: ingestion would never read it as text
        text, _ = F.decode(data)
        if text.strip():
            sel.generated.append(Item(entry.path, len(data), text, "generated"))
    sel.generated.sort(key=lambda i: i.path)
    return sel


def _tracked_fast(repo: Path, commit: str) -> tuple[list[Any], dict[str, str]]:
    """Ingestion's path-level selection alone (no second tree listing for the generated set)."""
    from codex_core import files as F

    if hasattr(F, "select_tracked"):
        return F.select_tracked(repo, commit)
    entries, skipped, _ = _tracked(repo, commit)
    return entries, skipped


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mask_all(masker: Masker, items: Iterable[Item]) -> None:
    for item in items:
        masker(item.text, path=item.path)


def interleaved(runs: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    """Each callable once as warm-up, then ``repeat`` rounds, alternating the order every round."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(repeat):
        for name in names if round_ % 2 == 0 else names[::-1]:
            times[name].append(timed(runs[name]))
    return times


def rate(times: list[float], items: list[Item]) -> dict[str, float]:
    mib = sum(i.data_bytes for i in items) / MiB
    best, median = min(times), statistics.median(times)
    return {
        "min_s": round(best, 4), "median_s": round(median, 4), "times_s": [round(t, 4) for t in times],
        "mib_per_s": round(mib / best, 2) if best else float("inf"),
        "files_per_s": round(len(items) / best, 1) if best else float("inf"),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("inf")


# --------------------------------------------------------------------------- findings


def preview(masked_line: str, marker_index: int, prefix: str) -> str:
    """The masked line, clipped to PREVIEW_CHARS around the ``marker_index``-th redaction."""
    if len(masked_line) <= PREVIEW_CHARS:
        return masked_line
    at, pos = -1, -1
    for _ in range(marker_index + 1):
        nxt = masked_line.find(prefix, pos + 1)
        if nxt == -1:
            break
        at = pos = nxt
    start = max(0, min(at - 60, len(masked_line) - PREVIEW_CHARS)) if at >= 0 else 0
    return masked_line[start:start + PREVIEW_CHARS]


def findings_of(masker: Masker, prefix: str, repo: str, items: list[Item]) -> tuple[list[dict], dict[str, int]]:
    rows: list[dict] = []
    per_file: dict[str, int] = {}
    for item in items:
        masked, findings = masker(item.text, path=item.path)
        per_file[item.path] = len(findings)
        if not findings:
            continue
        lines = masked.split("\n")
        seen_on_line: Counter[int] = Counter()
        for f in findings:
            nth = seen_on_line[f.line]
            seen_on_line[f.line] += 1
            rows.append({
                "repo": repo, "set": item.set, "path": item.path, "line": f.line, "kind": f.kind,
                "preview": preview(lines[f.line - 1], nth, prefix),
            })
    return rows, per_file


def label_key(row: dict) -> str:
    return f"{row['path']}:{row['line']}:{row['kind']}"


def load_labels(path: Path | None) -> dict[str, dict[str, str]]:
    """{repo or "*": {"path:line:kind": "tp"|"fp"}}."""
    if path is None:
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    labels: dict[str, dict[str, str]] = {"*": {}}

    def label_of(value: Any) -> str:
        value = value.get("label") if isinstance(value, dict) and "label" in value else value
        if value not in ("tp", "fp"):
            raise SystemExit(f"{path}: labels are 'tp' or 'fp', got {value!r}")
        return value

    for key, value in raw.items():
        if key.startswith("_"):
            continue  # comments
        if isinstance(value, dict) and "label" not in value:
            labels[key] = {k: label_of(v) for k, v in value.items() if not k.startswith("_")}
        else:
            labels["*"][key] = label_of(value)
    return labels


def summarize(rows: list[dict], items: list[Item], labels: dict[str, str] | None,
              other_rows: list[dict] | None = None) -> dict[str, Any]:
    lines = sum(i.lines for i in items)
    masked_lines = {(r["path"], r["line"]) for r in rows}
    out: dict[str, Any] = {
        "files": len(items),
        "mib": round(sum(i.data_bytes for i in items) / MiB, 3),
        "lines": lines,
        "findings": len(rows),
        "masked_lines": len(masked_lines),
        "masked_lines_per_10k": round(1e4 * len(masked_lines) / lines, 3) if lines else 0.0,
        "files_with_findings": len({r["path"] for r in rows}),
        "by_kind": dict(sorted(Counter(r["kind"] for r in rows).items())),
    }
    if other_rows is not None:
        mine = Counter(label_key(r) for r in rows)
        theirs = Counter(label_key(r) for r in other_rows)
        out["only_here"] = sum((mine - theirs).values())
        out["only_in_other"] = sum((theirs - mine).values())
    if labels is not None:
        got = [labels.get(label_key(r)) for r in rows]
        tp, fp = got.count("tp"), got.count("fp")
        fp_lines = {(r["path"], r["line"]) for r, g in zip(rows, got, strict=True) if g == "fp"}
        out["labels"] = {
            "tp": tp, "fp": fp, "unlabeled": got.count(None),
            "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "fp_masked_lines": len(fp_lines),
            "fp_lines_per_10k": round(1e4 * len(fp_lines) / lines, 3) if lines else 0.0,
        }
    return out


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")


# --------------------------------------------------------------------------- per repository


def parse_repo(spec: str, default_commit: str) -> tuple[str, Path, str]:
    """``[NAME=]PATH[@REV]`` -> (name, path, rev)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, ""
    path, at, rev = path.rpartition("@") if "@" in path else (path, "", "")
    p = Path(path).expanduser().resolve()
    if not name:
        name = p.parent.name if p.name in ("repo", ".git") else p.name.removesuffix(".git")
    return name, p, rev if at and rev else default_commit


def bench_repo(name: str, repo: Path, commit_ref: str, maskers: dict[str, ModuleType], repeat: int,
               out_dir: Path, labels: dict[str, dict[str, str]]) -> dict[str, Any]:
    from codex_core import files as F
    from codex_core.git import head_sha

    commit = head_sha(repo, commit_ref)
    started = time.perf_counter()
    sel = select_files(repo, commit)
    print(f"{name} @ {commit[:12]}: {len(sel.indexed)} indexed files, {len(sel.generated)} generated "
          f"(skipped: {dict(sorted(sel.skipped.items()))})", file=sys.stderr)

    # The selection must be what ingestion indexes (a check on this script, not on files.py).
    scanned = F.scan_repository(repo, commit)
    if [f.path for f in scanned.files] != [i.path for i in sel.indexed]:
        raise SystemExit(f"{name}: the benchmark's file selection differs from scan_repository's")

    fns = {label: m.mask_secrets for label, m in maskers.items()}
    # "baseline_again" is the baseline timed a second time in the same rounds: the ratio of the two
    # is the noise floor of this run (what "within noise" is judged against).
    timed_fns = {**fns, "baseline_again": fns["baseline"]}
    mask_times = interleaved({label: (lambda fn=fn: mask_all(fn, sel.indexed)) for label, fn in timed_fns.items()},
                             repeat)
    gen_times = interleaved({label: (lambda fn=fn: mask_all(fn, sel.generated)) for label, fn in fns.items()},
                            repeat) if sel.generated else None
    read_times = interleaved({"read": lambda: select_files(repo, commit, with_generated=False)}, repeat)["read"]

    def scan_with(fn: Masker) -> Callable[[], Any]:
        def run() -> None:
            saved = F.mask_secrets
            F.mask_secrets = fn
            try:
                F.scan_repository(repo, commit)
            finally:
                F.mask_secrets = saved
        return run

    scan_times = interleaved({label: scan_with(fn) for label, fn in timed_fns.items()}, repeat)

    throughput: dict[str, Any] = {
        label: {**rate(mask_times[label], sel.indexed),
                "share_of_read_decode_mask": round(min(mask_times[label])
                                                   / (min(mask_times[label]) + min(read_times)), 3)}
        for label in fns
    }
    throughput["read_decode_select"] = rate(read_times, sel.indexed)
    throughput["scan_repository"] = {label: rate(scan_times[label], sel.indexed) for label in fns}
    throughput["ratio_current_over_baseline"] = {
        "mask_min_s": ratio(min(mask_times["current"]), min(mask_times["baseline"])),
        "mask_median_s": ratio(statistics.median(mask_times["current"]), statistics.median(mask_times["baseline"])),
        "scan_repository_min_s": ratio(min(scan_times["current"]), min(scan_times["baseline"])),
        "scan_repository_median_s": ratio(statistics.median(scan_times["current"]),
                                          statistics.median(scan_times["baseline"])),
    }
    throughput["noise_floor_baseline_over_itself"] = {
        "mask_min_s": ratio(min(mask_times["baseline_again"]), min(mask_times["baseline"])),
        "mask_median_s": ratio(statistics.median(mask_times["baseline_again"]),
                               statistics.median(mask_times["baseline"])),
        "scan_repository_min_s": ratio(min(scan_times["baseline_again"]), min(scan_times["baseline"])),
        "scan_repository_median_s": ratio(statistics.median(scan_times["baseline_again"]),
                                          statistics.median(scan_times["baseline"])),
    }
    throughput["baseline_again"] = rate(mask_times["baseline_again"], sel.indexed)
    throughput["scan_repository"]["baseline_again"] = rate(scan_times["baseline_again"], sel.indexed)
    if gen_times is not None:
        throughput["generated_set"] = {label: rate(gen_times[label], sel.generated) for label in fns}

    repo_out = out_dir / name
    repo_out.mkdir(parents=True, exist_ok=True)
    repo_labels = {**labels.get("*", {}), **labels.get(name, {})} if labels else None
    rows: dict[str, list[dict]] = {}
    per_file: dict[str, dict[str, int]] = {}
    for label, module in maskers.items():
        prefix = getattr(module, "REDACTED_PREFIX", "«redacted:")
        found, counts = findings_of(module.mask_secrets, prefix, name, sel.indexed + sel.generated)
        rows[label] = sorted(found, key=lambda r: (r["set"] != "indexed", r["path"], r["line"], r["kind"]))
        per_file[label] = counts
        write_jsonl(repo_out / f"findings.{label}.jsonl", rows[label])
    write_jsonl(repo_out / "files.jsonl", (
        {"path": i.path, "set": i.set, "bytes": i.data_bytes, "lines": i.lines,
         **{f"findings_{label}": per_file[label][i.path] for label in maskers}}
        for i in sel.indexed + sel.generated
    ))

    sets: dict[str, Any] = {}
    for set_name, items in (("indexed", sel.indexed), ("generated", sel.generated)):
        sets[set_name] = {}
        for label in maskers:
            other = "baseline" if label == "current" else "current"
            mine = [r for r in rows[label] if r["set"] == set_name]
            theirs = [r for r in rows[other] if r["set"] == set_name]
            sets[set_name][label] = summarize(mine, items, repo_labels, theirs)
    return {
        "repo": name, "path": str(repo), "commit": commit, "skipped_by_reason": dict(sorted(sel.skipped.items())),
        "generated_files": [i.path for i in sel.generated],
        "throughput": throughput, "findings": sets, "repeat": repeat,
        "seconds": round(time.perf_counter() - started, 1),
    }


# --------------------------------------------------------------------------- report


def table(results: list[dict[str, Any]]) -> str:
    out = [
        "| repo | files | MiB | current MiB/s | baseline MiB/s | mask ratio cur/base (min, median) "
        "| noise: baseline/itself (min, median) | scan_repository ratio cur/base (min, median) "
        "| noise: scan base/itself (min, median) | mask share of read+decode+mask |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t, cur = r["throughput"], r["findings"]["indexed"]["current"]
        ratios, noise = t["ratio_current_over_baseline"], t["noise_floor_baseline_over_itself"]
        out.append(
            f"| {r['repo']} | {cur['files']} | {cur['mib']:.2f} | {t['current']['mib_per_s']:.2f} "
            f"| {t['baseline']['mib_per_s']:.2f} | {ratios['mask_min_s']:.3f}, {ratios['mask_median_s']:.3f} "
            f"| {noise['mask_min_s']:.3f}, {noise['mask_median_s']:.3f} "
            f"| {ratios['scan_repository_min_s']:.3f}, {ratios['scan_repository_median_s']:.3f} "
            f"| {noise['scan_repository_min_s']:.3f}, {noise['scan_repository_median_s']:.3f} "
            f"| {t['current']['share_of_read_decode_mask']:.1%} |"
        )
    out += [
        "",
        "| repo | set | lines | findings cur (base) | masked lines/10k cur (base) | files w/ findings "
        "| by kind (current) | tp / fp / unlabeled | precision | fp lines/10k |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        for set_name in ("indexed", "generated"):
            cur, base = r["findings"][set_name]["current"], r["findings"][set_name]["baseline"]
            lab = cur.get("labels")
            kinds = ", ".join(f"{k} {v}" for k, v in cur["by_kind"].items()) or "-"
            out.append(
                f"| {r['repo']} | {set_name} ({cur['files']} files) | {cur['lines']} "
                f"| {cur['findings']} ({base['findings']}) "
                f"| {cur['masked_lines_per_10k']:.2f} ({base['masked_lines_per_10k']:.2f}) "
                f"| {cur['files_with_findings']} | {kinds} "
                + (f"| {lab['tp']} / {lab['fp']} / {lab['unlabeled']} | "
                   f"{'-' if lab['precision'] is None else format(lab['precision'], '.3f')} "
                   f"| {lab['fp_lines_per_10k']:.2f} |" if lab else "| - | - | - |")
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repos", nargs="+", metavar="REPO",
                        help="[NAME=]PATH[@REV]: a git work tree or bare git dir, its name in the outputs and "
                        "labels, the commit to read there (default --commit)")
    parser.add_argument("--commit", default="HEAD", help="commit (or ref) to read in every repository")
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--baseline-rev", default=DEFAULT_BASELINE_REV,
                      help="revision of THIS repository whose codex_core/secrets.py is the baseline")
    base.add_argument("--baseline-file", type=Path, help="a secrets.py file to use as the baseline instead")
    parser.add_argument("--baseline-repo", type=Path, default=REPO_ROOT,
                        help="the git repository --baseline-rev is read from (default: this one)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "secrets", help="directory for the raw outputs")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per masker (after one warm-up)")
    parser.add_argument("--labels", type=Path, help='JSON: "path:line:kind" -> "tp"/"fp" (flat or per repo)')
    args = parser.parse_args(argv)

    started = time.perf_counter()
    current, current_source, current_origin = current_masker()
    source, origin = baseline_source(None if args.baseline_file else args.baseline_rev, args.baseline_file,
                                     args.baseline_repo)
    baseline = load_masker_module(source, "baseline")
    maskers = {"current": current, "baseline": baseline}
    masker_info = {
        "current": describe(current, current_source, current_origin),
        "baseline": describe(baseline, source, origin),
    }
    labels = load_labels(args.labels)
    args.out.mkdir(parents=True, exist_ok=True)

    results = []
    for spec in args.repos:
        name, path, rev = parse_repo(spec, args.commit)
        results.append(bench_repo(name, path, rev, maskers, max(1, args.repeat), args.out, labels))

    summary = {
        "maskers": masker_info,
        "labels_file": str(args.labels) if args.labels else None,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    report = table(results)
    (args.out / "summary.md").write_text(report + "\n")
    print(f"current: {masker_info['current']}  baseline: {masker_info['baseline']}")
    print(report)
    print(f"\n{summary['seconds']} s; raw outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
