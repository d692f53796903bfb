"""Near-duplicate chunk removal with MinHash LSH: one stored copy, every location remembered."""

from __future__ import annotations

import re
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

from codex_core.models import Chunk, Location

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


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
    mh = MinHash(num_perm=num_perm, seed=1)
    mh.update_batch(list(shingle_set))
    return mh


def _location(chunk: Chunk) -> Location:
    return Location(path=chunk.path, start_line=chunk.start_line, end_line=chunk.end_line, symbol=chunk.symbol)


def dedup_chunks(
    chunks: list[Chunk],
    *,
    threshold: float = 0.9,
    num_perm: int = 128,
    min_shingles: int = 8,
) -> tuple[list[Chunk], DedupStats]:
    """Collapse exact and near-identical chunks (estimated Jaccard >= ``threshold`` on 5-token shingles).

    The kept copy is the first by (path, start_line) so the choice is stable across runs; the
    others become its ``duplicates``. Tiny chunks (< ``min_shingles`` shingles) are only merged
    when exactly identical: their shingle sets are too small for a meaningful Jaccard estimate.
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
        sh = shingles(chunk.text)
        if len(sh) < min_shingles:
            unique.append(chunk)
            continue
        mh = _minhash(sh, num_perm)
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
