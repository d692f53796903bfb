"""Snapshot create / verify / restore time for a repository with an 80k-point index.

What is built (in a temporary directory, nothing under an existing CODEX_HOME is touched):

* Payloads: REAL code — ~40-line windows of the installed ``dagster`` package's ``.py`` files (cycled
  with a distinct path prefix per pass until ``--points``), as ``Chunk`` rows written with
  ``catalog.write_chunks`` and staged with ``catalog.point_payload`` (exactly what ingestion publishes).
* Vectors: SYNTHETIC — random 384-dim unit vectors (seeded). The archive and restore cost does not
  depend on what the vectors mean, only on their bytes.
* The rest of a repo's state: files.parquet, skipped.json, snapshot.json, published_index.json, a
  small code graph, an embedding cache holding every chunk's vector under the default model id.
* ``EmbeddedVectorIndex.stage`` + ``publish`` — the real sealed version directory.

Measured in one run, same machine, same files:

* ``create``: ``create_snapshot`` (hash every file, check against version.json, write the archive),
  for ``--compression none`` (the default) and ``gz``;
* ``verify``: ``verify_snapshot`` (HMAC + sha256 of every member);
* ``restore``: ``restore_snapshot`` into a FRESH home (verify + extract + install + publish), then the
  same into the SOURCE home after deleting a file of its live version (the restore drill);
* baseline ``cp -r``: ``cp -r`` of the same version directory (coreutils, sparse-aware by default),
  plus ``cp -r`` + ``sync`` for a fair comparison with restore's fsyncs.

Target: restore < 60 s at 80k points. Run: ``.venv/bin/python benchmarks/restore_bench.py --points 80000``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _setup import OUT_DIR  # noqa: E402  (first: sets up the environment)

from codex_core import catalog  # noqa: E402
from codex_core.embedding import DEFAULT_MODEL_ID, EmbeddingCache, embedding_document  # noqa: E402
from codex_core.git import RepoRegistry  # noqa: E402
from codex_core.graph import write_graph  # noqa: E402
from codex_core.home import CodexHome  # noqa: E402
from codex_core.models import Chunk, Definition, Edge, content_hash  # noqa: E402
from codex_core.snapshot import create_snapshot, read_manifest, restore_snapshot, verify_snapshot  # noqa: E402
from codex_core.vector_store import VERSIONS_DIR, EmbeddedVectorIndex, IndexPoint  # noqa: E402

REPO = "bench"
COMMIT = "c0ffee" + "0" * 34
DIM = 384
WINDOW = 40
KEY = b"restore-bench-key-0123456789abcdef"
TARGET_RESTORE_S = 60.0


def code_chunks(points: int) -> list[Chunk]:
    import dagster

    root = Path(dagster.__file__).resolve().parent
    files = sorted(root.rglob("*.py"))
    chunks: list[Chunk] = []
    round_no = 0
    while len(chunks) < points:
        for f in files:
            lines = f.read_text(encoding="utf-8", errors="replace").split("\n")
            rel = f"pass{round_no}/{f.relative_to(root).as_posix()}"
            for start in range(0, len(lines), WINDOW):
                text = "\n".join(lines[start : start + WINDOW])
                if not text.strip():
                    continue
                chunks.append(Chunk(REPO, COMMIT, rel, "python", None, "window", start + 1,
                                    min(start + WINDOW, len(lines)), text, content_hash(text)))
                if len(chunks) >= points:
                    return chunks
        round_no += 1
    return chunks


def build_home(home: CodexHome, points: int, source: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    chunks = code_chunks(points)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(chunks), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    repo_dir = home.repo_dir(REPO)
    repo_dir.mkdir(parents=True)
    catalog.write_chunks(repo_dir / catalog.UNIQUE_CHUNKS, chunks)
    paths = sorted({c.path for c in chunks})
    import pandas as pd

    pd.DataFrame(
        [{"path": p, "language": "python", "size": 0, "blob_sha": "0" * 40, "text": "", "lines": 0,
          "decoded_with_replacement": False} for p in paths]
    ).to_parquet(repo_dir / catalog.FILES, index=False)
    catalog.write_json(repo_dir / catalog.SKIPPED, {"commit": COMMIT, "skipped": {}})
    catalog.write_json(repo_dir / catalog.SNAPSHOT, {"name": REPO, "source": str(source), "worktree": str(source),
                                                     "commit": COMMIT, "taken_at": "2025-01-01T00:00:00+00:00"})
    definitions = [Definition(p, p.rsplit("/", 1)[-1], "module", p, "python", 1, 1) for p in paths]
    edges = [Edge("<module>", b, "imports", a, 1, b, True) for a, b in zip(paths, paths[1:], strict=False)]
    write_graph(home.graph_dir(REPO), definitions, edges)
    cache = EmbeddingCache(home.embedding_cache_path)
    rows = [(content_hash(embedding_document(c)), v) for c, v in zip(chunks, vectors, strict=True)]
    cache.put_many(DEFAULT_MODEL_ID, rows)
    cache.close()
    RepoRegistry(home.registry_path).add(REPO, str(source))
    t_files = time.perf_counter()
    index = EmbeddedVectorIndex(home.index_dir)
    try:
        version = index.stage(REPO, DIM, (IndexPoint(c.point_id, v, catalog.point_payload(c))
                                          for c, v in zip(chunks, vectors, strict=True)), commit=COMMIT)
        published = index.publish(REPO, version, commit=COMMIT)
    finally:
        index.close()
    catalog.write_json(repo_dir / catalog.PUBLISHED, published.__dict__)
    return {"points": published.points, "version": version, "seconds_files": round(t_files - t0, 2),
            "seconds_stage": round(time.perf_counter() - t_files, 2)}


def du(path: Path, apparent: bool = False) -> int:
    args = ["du", "-sb" if apparent else "-sB1", str(path)]
    return int(subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()[0])


def content_sizes(path: Path) -> dict[str, int]:
    """Bytes of the archive's members by kind (sizes as files; sparse index files are smaller in the tar)."""
    manifest, _ = read_manifest(path)
    groups: dict[str, int] = {}
    for name, entry in manifest["files"].items():
        kind = ("index" if name.startswith("index/") else "embeddings" if name == "embeddings.sqlite"
                else "graph" if name.startswith("repo/graph/") else "catalog+config")
        groups[kind] = groups.get(kind, 0) + entry["size"]
    return groups


def timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=80_000)
    parser.add_argument("--workdir", help="where to build (default: a temp dir, removed afterwards)")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="restore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "points": args.points,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "load_avg_start": os.getloadavg(),
    }
    try:
        source = work / "source"
        source.mkdir()
        home = CodexHome(work / "home")
        results["build"] = build_home(home, args.points, source)
        vdir = home.index_dir / REPO / VERSIONS_DIR / results["build"]["version"]
        results["version_dir_bytes"] = {"allocated": du(vdir), "apparent": du(vdir, apparent=True)}
        print(f"built {results['build']}", file=sys.stderr)

        snaps: dict[str, Any] = {}
        for compression in ("none", "gz"):
            seconds, info = timed(lambda c=compression: create_snapshot(
                home, REPO, key=KEY, out_dir=work / "snapshots" / c, compression=c))
            v_seconds, _ = timed(lambda p=info.path: verify_snapshot(p, KEY))
            snaps[compression] = {"path": info.path, "create_s": round(seconds, 2), "verify_s": round(v_seconds, 2),
                                  "archive_bytes": info.size, "files": info.files}
            if compression == "none":
                results["content_bytes"] = content_sizes(info.path)
            print(f"{compression}: {snaps[compression]}", file=sys.stderr)

        restores: dict[str, Any] = {}
        for compression in ("none", "gz"):
            fresh = CodexHome(work / f"fresh-{compression}")
            seconds, report = timed(lambda h=fresh, c=compression: restore_snapshot(h, snaps[c]["path"], KEY))
            restores[f"fresh_{compression}"] = {"seconds": round(seconds, 2), "phases": report.seconds}
            print(f"restore {compression} into a fresh home: {restores[f'fresh_{compression}']}", file=sys.stderr)

        # Drill: damage the live version, restore the uncompressed snapshot over it.
        victim = max((p for p in vdir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        victim.unlink()
        seconds, report = timed(lambda: restore_snapshot(home, snaps["none"]["path"], KEY))
        index = EmbeddedVectorIndex(home.index_dir)
        try:
            intact = not index.check_files(REPO, results["build"]["version"])
        finally:
            index.close()
        restores["drill_none"] = {"seconds": round(seconds, 2), "phases": report.seconds, "intact_after": intact}
        print(f"drill: {restores['drill_none']}", file=sys.stderr)

        baseline: dict[str, Any] = {}
        for label, command in (("cp -r", "cp -r {src} {dst}"), ("cp -r + sync", "cp -r {src} {dst} && sync")):
            dst = work / f"cp-{len(baseline)}"
            seconds, _ = timed(lambda c=command, d=dst: subprocess.run(
                c.format(src=vdir, dst=d), shell=True, check=True))
            baseline[label] = round(seconds, 3)
            shutil.rmtree(dst)
        results.update({
            "snapshots": {k: {**v, "path": str(v["path"])} for k, v in snaps.items()},
            "restores": restores,
            "baseline_seconds": baseline,
            "ratio_restore_vs_cp": round(restores["fresh_none"]["seconds"] / max(baseline["cp -r"], 1e-6), 1),
            "ratio_restore_vs_cp_sync": round(restores["fresh_none"]["seconds"] / max(baseline["cp -r + sync"], 1e-6),
                                              1),
            "target_restore_s": TARGET_RESTORE_S,
            "meets_target": restores["fresh_none"]["seconds"] < TARGET_RESTORE_S,
            "load_avg_end": os.getloadavg(),
        })
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"restore_bench_{args.points}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    rows = [
        ("create (none)", results["snapshots"]["none"]["create_s"]),
        ("create (gz)", results["snapshots"]["gz"]["create_s"]),
        ("verify (none)", results["snapshots"]["none"]["verify_s"]),
        ("verify (gz)", results["snapshots"]["gz"]["verify_s"]),
        ("restore into fresh home (none)", results["restores"]["fresh_none"]["seconds"]),
        ("restore into fresh home (gz)", results["restores"]["fresh_gz"]["seconds"]),
        ("restore drill over damaged live version (none)", results["restores"]["drill_none"]["seconds"]),
        ("cp -r of the version directory", results["baseline_seconds"]["cp -r"]),
        ("cp -r + sync", results["baseline_seconds"]["cp -r + sync"]),
    ]
    print(f"\n{args.points} points; version dir {results['version_dir_bytes']['allocated'] / 2**20:.0f} MiB allocated "
          f"/ {results['version_dir_bytes']['apparent'] / 2**20:.0f} MiB apparent")
    print(f"archive: none {results['snapshots']['none']['archive_bytes'] / 2**20:.0f} MiB, "
          f"gz {results['snapshots']['gz']['archive_bytes'] / 2**20:.0f} MiB; content (file sizes) "
          + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in results["content_bytes"].items()))
    for label, seconds in rows:
        print(f"  {label:<48} {seconds:>7.2f} s")
    print(f"  restore / cp -r = {results['ratio_restore_vs_cp']}x, restore / (cp -r + sync) = "
          f"{results['ratio_restore_vs_cp_sync']}x; target < {TARGET_RESTORE_S:.0f} s: "
          f"{'met' if results['meets_target'] else 'MISSED'}")
    print(f"  phases (fresh, none): {results['restores']['fresh_none']['phases']}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
