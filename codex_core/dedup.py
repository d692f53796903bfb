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


def _cached_minhash(chunk: Chunk, num_perm: int, cache: dict[str, np.ndarray] | None) -> MinHash | None:
    """Signature of a chunk (None when too small to compare), reusing ``cache`` across runs."""
    if cache is not None and chunk.content_hash in cache:
        values = cache[chunk.content_hash]
        if values.size == 0:
            return None
        return MinHash(num_perm=num_perm, seed=1, hashvalues=values, scheme=MINHASH_SCHEME)
    sh = shingles(chunk.text)
    mh = _minhash(sh, num_perm) if len(sh) >= MIN_SHINGLES else None
    if cache is not None:
        cache[chunk.content_hash] = np.array([], dtype=SIGNATURE_DTYPE) if mh is None else mh.hashvalues
    return mh


def _location(chunk: Chunk) -> Location:
    return Location(path=chunk.path, start_line=chunk.start_line, end_line=chunk.end_line, symbol=chunk.symbol)


def dedup_chunks(
    chunks: list[Chunk],
    *,
    threshold: float = 0.9,
    num_perm: int = 128,
    signature_cache: dict[str, np.ndarray] | None = None,
) -> tuple[list[Chunk], DedupStats]:
    """Collapse exact and near-identical chunks (estimated Jaccard >= ``threshold`` on 5-token shingles).

    The kept copy is the first by (path, start_line) so the choice is stable across runs; the
    others become its ``duplicates``. Tiny chunks (< ``MIN_SHINGLES`` shingles) are only merged
    when exactly identical: their shingle sets are too small for a meaningful Jaccard estimate.
    ``signature_cache`` (content hash -> MinHash values) makes re-runs compute only new chunks.
    """
    ordered = sorted(chunks, key=lambda c: (c.path, c.start_line, c.end_line))
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
    lsh = MinHashLSH(threshold=max(0.5, threshold - 0.15), num_perm=num_perm)
    signatures: dict[str, MinHash] = {}
    unique: list[Chunk] = []
    near = 0
    for chunk in by_hash.values():
        mh = _cached_minhash(chunk, num_perm, signature_cache)
        if mh is None:
            unique.append(chunk)
            continue
        match = next(
            (key for key in lsh.query(mh) if signatures[key].jaccard(mh) >= threshold),
            None,
        )
        if match is None:
            lsh.insert(chunk.content_hash, mh)
            signatures[chunk.content_hash] = mh
            unique.append(chunk)
            continue
        kept = by_hash[match]
        kept.duplicates.append(_location(chunk))
        kept.duplicates.extend(chunk.duplicates)
        near += 1
    return unique, DedupStats(len(chunks), len(unique), exact, near)
