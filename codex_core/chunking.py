"""Split a file into citeable chunks: whole symbols for code, heading sections for markdown,
overlapping line windows for everything else.

Every chunk is a run of whole lines: ``span.text == "\\n".join(text.split("\\n")[start-1:end])``.
Chunks of a file are sorted by start line, every non-blank line is in at least one chunk, and
no chunk is only whitespace.

Code (python, javascript, typescript, tsx, go, java, rust) is chunked on definitions:

* A definition that fits (at most 1.5 x ``target_tokens``) is one chunk: symbol = its qualified
  name, kind = its kind. Comment lines directly above it (doc comments, no blank line between)
  are part of its chunk, so the chunk may start above the definition itself.
* An oversized definition is split on its child definitions, recursively: a *header* chunk with
  the definition's own symbol and kind (class line, docstring, fields), the children's chunks,
  and the code between them (symbol and kind of the enclosing definition). An oversized
  definition without children becomes overlapping line windows that keep its symbol and kind;
  only these windows overlap.
* Code between definitions (imports, constants, statements) gets kind ``module``, symbol None.
* Small neighbours at the same level merge, up to ``target_tokens``: pieces of at most
  ``target_tokens // 4`` tokens each, plus any piece of at most ``target_tokens // 20`` tokens of
  in-between code (a closing brace, a ``main()`` call), which attaches to its neighbour. A
  merged chunk takes the symbol and kind of its LARGEST definition (the first of equals): the
  one the chunk is mostly about. Module code never hides a definition's symbol, and a header
  chunk never merges, so a split class always keeps a chunk labelled with its own name.

Markdown is chunked on ATX and setext headings (from the tree-sitter grammar, so ``#`` inside
fenced code is not a heading): symbol = heading path joined with ``" > "``, kind ``section``;
text before the first heading is a section with symbol None; a heading directly followed by a
sub-heading joins the sub-section's chunk (which takes the deeper path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import tree_sitter

from codex_core.models import ChunkSpan
from codex_core.parsing import (
    DefinitionNode,
    comment_only_lines,
    definition_tree,
    end_line,
    node_text,
    parse,
    start_line,
)

# Nesting depth up to which oversized definitions are split on their children.
_MAX_SPLIT_DEPTH = 32

CODE_LANGUAGES = frozenset({"python", "javascript", "typescript", "tsx", "go", "java", "rust"})

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Cheap token estimate: words plus individual punctuation characters."""
    return sum(1 for _ in _TOKEN.finditer(text))


@dataclass(frozen=True)
class _Limits:
    target: int
    overlap: int

    @property
    def fits(self) -> int:
        """Largest definition kept whole."""
        return max(1, (self.target * 3) // 2)

    @property
    def small(self) -> int:
        return max(1, self.target // 4)

    @property
    def tiny(self) -> int:
        return max(1, self.target // 20)


class _Lines:
    """The file's lines with prefix sums of their token counts (O(1) span token counts)."""

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.line_tokens = [count_tokens(line) for line in self.lines]
        self._prefix = [0]
        for n in self.line_tokens:
            self._prefix.append(self._prefix[-1] + n)
        self.blank = [not line.strip() for line in self.lines]

    def __len__(self) -> int:
        return len(self.lines)

    def tokens(self, start: int, end: int) -> int:
        """Tokens of 1-based inclusive lines ``start..end``."""
        return self._prefix[end] - self._prefix[start - 1]

    def line_tokens_at(self, line: int) -> int:
        return self.line_tokens[line - 1]

    def is_blank(self, line: int) -> bool:
        return self.blank[line - 1]

    def trim(self, start: int, end: int) -> tuple[int, int]:
        """Drop blank lines from both ends; ``start > end`` when nothing is left."""
        while start <= end and self.is_blank(start):
            start += 1
        while end >= start and self.is_blank(end):
            end -= 1
        return start, end


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    tokens: int
    # definition: a whole definition; window: part of a split one (merges only with scraps);
    # gap: code around definitions; header: first lines of a split definition (never merges).
    role: str
    symbol: str | None
    kind: str
    all_small: bool
    # Produced inside a split child definition: already merged there, opaque here.
    frozen: bool = False
    # Size of the definition whose symbol labels a merged piece (None: this piece's own size).
    label_tokens: int | None = None

    @property
    def label_rank(self) -> tuple[bool, int]:
        """Which of two merged pieces names the result: definitions first, then the larger."""
        named = self.role in ("definition", "window")
        return named, self.tokens if self.label_tokens is None else self.label_tokens


def chunk_file(
    path: str,
    text: str,
    language: str,
    *,
    target_tokens: int = 300,
    overlap_tokens: int = 50,
) -> list[ChunkSpan]:
    """Chunks of one file, sorted by start line (see the module docstring for the rules)."""
    if not text.strip():
        return []
    lines = _Lines(text)
    limits = _Limits(target=max(1, target_tokens), overlap=max(0, overlap_tokens))
    pieces: list[_Piece] | None = None
    if language in CODE_LANGUAGES:
        pieces = _code_pieces(path, text, language, lines, limits)
    elif language == "markdown":
        pieces = _markdown_pieces(text, lines, limits)
    if pieces is None:
        pieces = _window_pieces(lines, 1, len(lines), limits, symbol=None, kind="window")
    return _spans(path, language, lines, pieces)


def _spans(path: str, language: str, lines: _Lines, pieces: list[_Piece]) -> list[ChunkSpan]:
    spans = []
    for piece in pieces:
        start, end = lines.trim(max(1, piece.start), min(len(lines), piece.end))
        if start > end:
            continue
        spans.append(
            ChunkSpan(
                path=path,
                language=language,
                symbol=piece.symbol,
                kind=piece.kind,
                start_line=start,
                end_line=end,
                text="\n".join(lines.lines[start - 1 : end]),
            )
        )
    spans.sort(key=lambda s: (s.start_line, s.end_line))
    return spans


# ---------------------------------------------------------------------------------------------
# Line windows
# ---------------------------------------------------------------------------------------------


def _window_ranges(lines: _Lines, start: int, end: int, limits: _Limits) -> list[tuple[int, int]]:
    """Windows of whole lines of about ``target`` tokens, overlapping by about ``overlap``.

    Each window takes at least one line the previous one did not, so the walk always ends; a
    line bigger than the target is a window of its own.
    """
    start, end = lines.trim(start, end)
    if start > end:
        return []
    out: list[tuple[int, int]] = []
    window_start, previous_end = start, start - 1
    while True:
        window_end = max(window_start, previous_end + 1)
        tokens = lines.tokens(window_start, window_end)
        while window_end < end and tokens + lines.line_tokens_at(window_end + 1) <= limits.target:
            window_end += 1
            tokens += lines.line_tokens_at(window_end)
        out.append((window_start, window_end))
        if window_end >= end:
            return out
        window_start = _overlap_start(lines, window_start, window_end, limits)
        previous_end = window_end


def _overlap_start(lines: _Lines, window_start: int, window_end: int, limits: _Limits) -> int:
    """First line of the next window: whole lines closest to ``overlap`` tokens back."""
    best, best_gap = window_end + 1, limits.overlap
    overlap = 0
    line = window_end
    # Stay after window_start so windows move forward.
    while line > window_start:
        overlap += lines.line_tokens_at(line)
        gap = abs(overlap - limits.overlap)
        if gap < best_gap:
            best, best_gap = line, gap
        if overlap > limits.overlap + best_gap:
            break
        line -= 1
    next_line = window_end + 1
    if lines.tokens(best, window_end) + lines.line_tokens_at(next_line) > limits.target:
        return next_line  # the next line alone fills a window: no room for overlap
    return best


def _window_pieces(
    lines: _Lines, start: int, end: int, limits: _Limits, *, symbol: str | None, kind: str
) -> list[_Piece]:
    return [
        _Piece(s, e, lines.tokens(s, e), "window", symbol, kind, all_small=False)
        for s, e in _window_ranges(lines, start, end, limits)
    ]


# ---------------------------------------------------------------------------------------------
# Code: symbol chunks
# ---------------------------------------------------------------------------------------------


def _code_pieces(path: str, text: str, language: str, lines: _Lines, limits: _Limits) -> list[_Piece] | None:
    tree = parse(language, text)
    if tree is None:
        return None
    roots = definition_tree(path, language, text, tree=tree)
    comments = comment_only_lines(language, tree, lines.lines)
    chunker = _CodeChunker(lines, limits, comments)
    return chunker.region(1, len(lines), roots, owner=None)


class _CodeChunker:
    def __init__(self, lines: _Lines, limits: _Limits, comment_lines: set[int]) -> None:
        self.lines = lines
        self.limits = limits
        self.comment_lines = comment_lines

    def region(
        self,
        start: int,
        end: int,
        children: tuple[DefinitionNode, ...] | list[DefinitionNode],
        owner: DefinitionNode | None,
        depth: int = 0,
    ) -> list[_Piece]:
        """Pieces for lines ``start..end`` holding ``children`` (inside ``owner`` if split)."""
        pieces: list[_Piece] = []
        cursor = start
        # A split definition's header keeps at least the definition's first line, so its
        # symbol always labels a chunk even when a child starts on that same line.
        earliest_child = owner.definition.start_line + 1 if owner is not None else start
        for child in children:
            child_start = max(child.definition.start_line, cursor, earliest_child)
            child_end = min(child.definition.end_line, end)
            if child_end < child_start:
                continue  # shares all its lines with the previous definition: inside it
            lead = self._leading_comments(child_start, max(cursor, earliest_child))
            if lead > cursor:
                pieces.extend(self._gap(cursor, lead - 1, owner, is_header=not pieces))
            pieces.extend(self._definition(lead, child_end, child, depth))
            cursor = child_end + 1
        if cursor <= end:
            pieces.extend(self._gap(cursor, end, owner, is_header=not pieces))
        return _merge(pieces, self.limits)

    def _leading_comments(self, line: int, floor: int) -> int:
        """First line of the comment block directly above ``line`` (not above ``floor``)."""
        while line - 1 >= floor and (line - 1) in self.comment_lines and not self.lines.is_blank(line - 1):
            line -= 1
        return line

    def _gap(self, start: int, end: int, owner: DefinitionNode | None, *, is_header: bool) -> list[_Piece]:
        if owner is None:
            symbol, kind, role = None, "module", "gap"
        else:
            d = owner.definition
            symbol, kind = d.symbol, d.kind
            role = "header" if is_header else "gap"
        start, end = self.lines.trim(start, end)
        if start > end:
            return []
        tokens = self.lines.tokens(start, end)
        if tokens > self.limits.fits:
            windows = _window_pieces(self.lines, start, end, self.limits, symbol=symbol, kind=kind)
            # A windowed header is still the definition's entry point: never merged away.
            return [replace(w, role="header") for w in windows] if role == "header" else windows
        return [_Piece(start, end, tokens, role, symbol, kind, all_small=tokens <= self.limits.small)]

    def _definition(self, start: int, end: int, node: DefinitionNode, depth: int) -> list[_Piece]:
        d = node.definition
        tokens = self.lines.tokens(start, end)
        if tokens <= self.limits.fits:
            small = tokens <= self.limits.small
            return [_Piece(start, end, tokens, "definition", d.symbol, d.kind, all_small=small)]
        # Past _MAX_SPLIT_DEPTH nested splits (generated code), windows are as good and cheaper.
        if node.children and depth < _MAX_SPLIT_DEPTH:
            pieces = self.region(start, end, node.children, owner=node, depth=depth + 1)
            return [replace(p, frozen=True) for p in pieces]
        return _window_pieces(self.lines, start, end, self.limits, symbol=d.symbol, kind=d.kind)


def _merge(pieces: list[_Piece], limits: _Limits) -> list[_Piece]:
    merged: list[_Piece] = []
    for piece in pieces:
        if merged and _can_merge(merged[-1], piece, limits):
            merged[-1] = _combine(merged[-1], piece)
        else:
            merged.append(piece)
    return merged


def _can_merge(run: _Piece, piece: _Piece, limits: _Limits) -> bool:
    if run.frozen or piece.frozen or "header" in (run.role, piece.role):
        return False
    combined = run.tokens + piece.tokens
    # A scrap of in-between code sticks to its neighbour instead of being a chunk of its own.
    if (piece.role == "gap" and piece.tokens <= limits.tiny) or (run.role == "gap" and run.tokens <= limits.tiny):
        return combined <= limits.fits
    if "window" in (run.role, piece.role):
        return False
    return run.all_small and piece.all_small and combined <= limits.target


def _combine(run: _Piece, piece: _Piece) -> _Piece:
    labelled = run if run.label_rank >= piece.label_rank else piece
    return _Piece(
        start=run.start,
        end=max(run.end, piece.end),
        tokens=run.tokens + piece.tokens,
        role=labelled.role,
        symbol=labelled.symbol,
        kind=labelled.kind,
        all_small=run.all_small and piece.all_small,
        label_tokens=labelled.label_rank[1],
    )


# ---------------------------------------------------------------------------------------------
# Markdown: heading sections
# ---------------------------------------------------------------------------------------------

_CLOSING_HASHES = re.compile(r"(?:^|[ \t])#+[ \t]*$")


@dataclass(frozen=True)
class _Heading:
    line: int
    last_line: int  # a setext heading ends on its underline
    level: int
    title: str


@dataclass(frozen=True)
class _Section:
    start: int
    end: int
    symbol: str | None
    heading_end: int  # last line of the heading itself (start - 1 for the preamble)


def _markdown_pieces(text: str, lines: _Lines, limits: _Limits) -> list[_Piece] | None:
    tree = parse("markdown", text)
    if tree is None:
        return None
    headings = _headings(tree.root_node)
    sections: list[_Section] = []
    first = headings[0].line if headings else len(lines) + 1
    if first > 1:
        sections.append(_Section(1, first - 1, None, 0))
    path: list[_Heading] = []
    for i, heading in enumerate(headings):
        while path and path[-1].level >= heading.level:
            path.pop()
        path.append(heading)
        section_end = headings[i + 1].line - 1 if i + 1 < len(headings) else len(lines)
        symbol = " > ".join(h.title for h in path)
        sections.append(_Section(heading.line, section_end, symbol, heading.last_line))
    return _section_pieces(_join_bare_headings(sections, lines), lines, limits)


def _headings(root: tree_sitter.Node) -> list[_Heading]:
    """Document-level headings (not those inside block quotes or list items), in order."""
    found: list[_Heading] = []
    stack = list(reversed(root.children))
    while stack:
        node = stack.pop()
        if node.type == "section":
            stack.extend(reversed(node.children))
        elif node.type == "atx_heading":
            found.append(_atx_heading(node))
        elif node.type == "setext_heading":
            found.append(_setext_heading(node))
    return found


def _atx_heading(node: tree_sitter.Node) -> _Heading:
    level = 1
    for child in node.children:
        match = re.fullmatch(r"atx_h(\d)_marker", child.type)
        if match:
            level = int(match.group(1))
    content = node.child_by_field_name("heading_content")
    title = node_text(content).strip() if content is not None else ""
    title = _CLOSING_HASHES.sub("", title).strip()
    return _Heading(start_line(node), end_line(node), level, title or node_text(node).strip())


def _setext_heading(node: tree_sitter.Node) -> _Heading:
    level = 2 if any(c.type == "setext_h2_underline" for c in node.children) else 1
    content = node.child_by_field_name("heading_content")
    title = " ".join(node_text(content).split()) if content is not None else ""
    first = start_line(node)
    return _Heading(first, end_line(node), level, title or f"line {first}")


def _join_bare_headings(sections: list[_Section], lines: _Lines) -> list[_Section]:
    """Fold a section that is only its heading into the next one when that is a sub-section."""
    out: list[_Section] = []
    pending: _Section | None = None
    for section in sections:
        if pending is not None:
            nested = (
                section.symbol is not None
                and pending.symbol is not None
                and section.symbol.startswith(pending.symbol + " > ")
            )
            if nested:
                section = replace(section, start=pending.start)
            else:
                out.append(pending)
            pending = None
        body_start, body_end = lines.trim(section.heading_end + 1, section.end)
        is_bare = section.symbol is not None and body_start > body_end
        if is_bare:
            pending = section
        else:
            out.append(section)
    if pending is not None:
        out.append(pending)
    return out


def _section_pieces(sections: list[_Section], lines: _Lines, limits: _Limits) -> list[_Piece]:
    pieces: list[_Piece] = []
    for section in sections:
        start, end = lines.trim(section.start, section.end)
        if start > end:
            continue
        tokens = lines.tokens(start, end)
        if tokens > limits.fits:
            windows = _window_pieces(lines, start, end, limits, symbol=section.symbol, kind="section")
            pieces.extend(windows)
        else:
            pieces.append(_Piece(start, end, tokens, "definition", section.symbol, "section", False))
    return pieces
