"""How much of a chunk is prose (comments and docstrings) rather than code, line by line.

A question's words match a doc comment better than the code it describes: a class header with a
long docstring, or a public function's doc block, outranks the method that does the work. The
in-file order (``RetrievalConfig.in_file_order``) reads this share to prefer code. Line-based and
language-aware, no parse: a non-blank line is prose when it starts a comment (``#`` in
Python; ``//``, ``/*``, ``*`` in the C family, Go, JavaScript, Java and Rust, ``///`` and ``//!``
included) or lies inside a Python docstring (a statement that is only a string literal opening with
triple quotes). Languages without code (markdown, text) are 0: their own penalty handles them.
"""

from __future__ import annotations

_C_FAMILY = frozenset({"javascript", "typescript", "tsx", "go", "java", "rust", "c", "cpp", "csharp", "kotlin",
                       "swift", "scala", "php"})
_C_COMMENT = ("//", "/*", "*")
_QUOTES = ('"""', "'''")
_STRING_START = frozenset("rRbBuU\"'")


def prose_share(text: str, language: str | None) -> float:
    """Share of ``text``'s non-blank lines that are comments or docstrings, in [0, 1]."""
    if language != "python" and language not in _C_FAMILY:
        return 0.0
    lines = [line for line in map(str.strip, text.splitlines()) if line]
    if not lines:
        return 0.0
    if language == "python":
        return _python_prose(lines) / len(lines)
    prose = 0
    closing = False  # inside a /* block comment
    for line in lines:
        if closing:
            prose += 1
            closing = "*/" not in line
        elif line.startswith(_C_COMMENT):
            prose += 1
            closing = line.startswith("/*") and "*/" not in line[2:]
    return prose / len(lines)


def _python_prose(lines: list[str]) -> int:
    prose = 0
    closing: str | None = None  # the quotes that end the docstring being read
    in_string: str | None = None  # the quotes that end a multi-line string literal of code
    for line in lines:
        if closing is not None:
            prose += 1
            if closing in line:
                closing = None
            continue
        if in_string is not None:
            if line.count(in_string) % 2:
                in_string = None
            continue
        first = line[0]
        if first == "#":
            prose += 1
            continue
        if first not in _STRING_START and '"""' not in line and "'''" not in line:
            continue  # plain code: the common case
        body = line.lstrip("rRbBuU")
        opening = next((q for q in _QUOTES if body.startswith(q)), None)
        if opening is not None:
            prose += 1
            if opening not in body[3:]:
                closing = opening
            continue
        in_string = next((q for q in _QUOTES if line.count(q) % 2), None)
    return prose
