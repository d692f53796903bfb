"""Language detection by file name. Names here are the ``language`` values used everywhere."""

from __future__ import annotations

from pathlib import PurePosixPath

# Languages with a tree-sitter grammar installed from its own PyPI wheel.
PARSED_LANGUAGES = ("python", "javascript", "typescript", "tsx", "go", "java", "rust", "markdown")

_BY_SUFFIX = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".java": "java",
    ".rs": "rust",
    ".md": "markdown",
    ".markdown": "markdown",
    # Plain text families: chunked by line windows.
    ".txt": "text",
    ".rst": "text",
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".cfg": "ini",
    ".ini": "ini",
    ".sh": "shell",
    ".bash": "shell",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".kt": "kotlin",
    ".swift": "swift",
    ".scala": "scala",
    ".sql": "sql",
    ".html": "html",
    ".css": "css",
    ".scss": "css",
    ".proto": "protobuf",
    ".tf": "terraform",
}

_BY_NAME = {
    "Makefile": "make",
    "Dockerfile": "dockerfile",
    "README": "text",
    "LICENSE": "text",
    "CMakeLists.txt": "cmake",
}


def detect_language(path: str) -> str:
    """Language of a repository-relative path; ``text`` when nothing more specific is known."""
    p = PurePosixPath(path)
    if p.name in _BY_NAME:
        return _BY_NAME[p.name]
    return _BY_SUFFIX.get(p.suffix.lower(), "text")
