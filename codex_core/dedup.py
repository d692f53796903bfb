"""Near-duplicate chunk removal with MinHash LSH: one stored copy, every location remembered."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH

from codex_core.models import Chunk, Location

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
MIN_SHINGLES = 8
# Signatures are cached across runs: pin the scheme (and its value type) they are computed with.
MINHASH_SCHEME = "affine32"
SIGNATURE_DTYPE = np.uint32


@dataclass(frozen=True)
class DedupStats:
    chunks_in: int
    unique: int
    exact_duplicates: int
    near_duplicates: int

    @property
    def dropped(self) -> int:
        return self.exact_duplicates + self.near_duplicates


def shingles(text: str, size: int = 5) -> set[bytes]:
    tokens = _TOKEN_RE.findall(text)
    if len(tokens) < size:
        return {" ".join(tokens).encode()}
    return {" ".join(tokens[i : i + size]).encode() for i in range(len(tokens) - size + 1)}


def _minhash(shingle_set: set[bytes], num_perm: int) -> MinHash:
    mh = MinHash(num_perm=num_perm, seed=1, scheme=MINHASH_SCHEME)
    mh.update_batch(list(shingle_set))
    return mh


def _signature(chunk: Chunk, num_perm: int, cache: dict[str, np.ndarray] | None) -> np.ndarray | None:
    """MinHash values of a chunk (None when too small to compare), reusing ``cache`` across runs."""
    if cache is not None and chunk.content_hash in cache:
        values = cache[chunk.content_hash]
        return None if values.size == 0 else values
    sh = shingles(chunk.text)
    values = _minhash(sh, num_perm).hashvalues.astype(SIGNATURE_DTYPE) if len(sh) >= MIN_SHINGLES else None
    if cache is not None:
        cache[chunk.content_hash] = np.array([], dtype=SIGNATURE_DTYPE) if values is None else values
    return values


class _BandIndex:
    """LSH banding over MinHash signatures (datasketch's optimal ``b`` x ``r`` for the threshold),
    on plain arrays: no MinHash objects, and candidates come back in insertion order, so the kept
    copy of a near-duplicate cluster never depends on set iteration order."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        # datasketch's public MinHashLSH chooses the bands (b) and rows (r) that minimize false
        # positives + negatives at the threshold; only its parameters are used (its storage keeps
        # sets, whose iteration order would make the kept copy of a cluster vary).
        params = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.bands, self.rows = params.b, params.r
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.signatures: list[np.ndarray] = []

    def _keys(self, signature: np.ndarray) -> list[bytes]:
        r = self.rows
        return [signature[b * r : (b + 1) * r].tobytes() for b in range(self.bands)]

    def match(self, signature: np.ndarray, threshold: float) -> int | None:
        """The first inserted signature whose estimated Jaccard with ``signature`` is >= ``threshold``."""
        seen: set[int] = set()
        candidates: list[int] = []
        for bucket, key in zip(self.buckets, self._keys(signature), strict=True):
            for i in bucket.get(key, ()):
                if i not in seen:
                    seen.add(i)
                    candidates.append(i)
        for i in sorted(candidates):
            if np.count_nonzero(self.signatures[i] == signature) / signature.size >= threshold:
                return i
        return None

    def insert(self, signature: np.ndarray) -> int:
        index = len(self.signatures)
        self.signatures.append(signature)
        for bucket, key in zip(self.buckets, self._keys(signature), strict=True):
            bucket.setdefault(key, []).append(index)
        return index


def _location(chunk: Chunk) -> Location:
    return Location(path=chunk.path, start_line=chunk.start_line, end_line=chunk.end_line, symbol=chunk.symbol)


BUILD_OUTPUT_DIRS = frozenset({"dist", "build", "out", "target", "_build", "bundle", "bundles"})


def is_build_output(path: str) -> bool:
    """Under a directory that conventionally holds build output rather than sources."""
    return any(part in BUILD_OUTPUT_DIRS for part in path.split("/")[:-1])


def dedup_chunks(
    chunks: list[Chunk],
    *,
    threshold: float = 0.9,
    num_perm: int = 128,
    signature_cache: dict[str, np.ndarray] | None = None,
) -> tuple[list[Chunk], DedupStats]:
    """Collapse exact and near-identical chunks (estimated Jaccard >= ``threshold`` on 5-token shingles).

    The kept copy is the source one: a copy under a build-output directory (``dist/``, ``build/``,
    ... : a bundle committed next to its sources) yields to a copy elsewhere, then the first by
    (path, start_line) wins, so the choice is stable across runs; the others become its
    ``duplicates``. (Keeping ``dist/axios.js`` over ``lib/adapters/fetch.js`` would cite the bundle
    for every question about the adapter.) Tiny chunks (< ``MIN_SHINGLES`` shingles) are only merged
    when exactly identical: their shingle sets are too small for a meaningful Jaccard estimate.
    ``signature_cache`` (content hash -> MinHash values) makes re-runs compute only new chunks.
    """
    ordered = sorted(chunks, key=lambda c: (is_build_output(c.path), c.path, c.start_line, c.end_line))
    by_hash: dict[str, Chunk] = {}
    exact = 0
    for chunk in ordered:
        kept = by_hash.get(chunk.content_hash)
        if kept is None:
            chunk.duplicates = []
            by_hash[chunk.content_hash] = chunk
        else:
            kept.duplicates.append(_location(chunk))
            exact += 1

    # LSH banding is tuned below the real threshold: it only proposes candidates (banding misses
    # pairs just above its own threshold), the signature estimate then decides.
    lsh = _BandIndex(max(0.5, threshold - 0.15), num_perm)
    kept_hashes: list[str] = []
    unique: list[Chunk] = []
    near = 0
    for chunk in by_hash.values():
        signature = _signature(chunk, num_perm, signature_cache)
        if signature is None:
            unique.append(chunk)
            continue
        match = lsh.match(signature, threshold)
        if match is None:
            lsh.insert(signature)
            kept_hashes.append(chunk.content_hash)
            unique.append(chunk)
            continue
        kept = by_hash[kept_hashes[match]]
        kept.duplicates.append(_location(chunk))
        kept.duplicates.extend(chunk.duplicates)
        near += 1
    return unique, DedupStats(len(chunks), len(unique), exact, near)
