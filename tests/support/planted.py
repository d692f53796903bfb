"""The planted-signal history of the learned-ranker tests (tests/core/test_ranker.py explains it)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.history import HistoryBuilder

TOPICS = [
    ("invoices", "invoice totals", "total"), ("shipping", "shipping labels", "label"),
    ("refunds", "refund requests", "refund"), ("coupons", "coupon codes", "coupon"),
    ("payroll", "payroll runs", "payslip"), ("taxes", "tax rates", "rate"),
    ("inventory", "stock levels", "stock"), ("accounts", "user accounts", "account"),
    ("reports", "monthly reports", "report"), ("alerts", "alert rules", "alert"),
    ("uploads", "file uploads", "upload"), ("sessions", "login sessions", "session"),
]
CHANGES = [
    ("    return {noun}\n", "    {noun} = validate_{noun}({noun})\n    return {noun}\n",
     "Validate every {what} before it is stored"),
    ("def store_{noun}({noun}):\n", "def store_{noun}({noun}):\n    log_{noun}_event({noun})\n",
     "Record an audit event whenever {what} are stored"),
    ("def load_{noun}(key):\n", "def load_{noun}(key):\n    key = normalize_{noun}_key(key)\n",
     "Normalize lookup keys when loading {what} from storage"),
    ("def load_{noun}(key):\n", "def load_{noun}(key, *, fresh=False):\n",
     "Allow callers to bypass the cache when loading {what}"),
]


def module_text(module: str, noun: str) -> str:
    return (f'"""Storage of {module}."""\n\n\ndef store_{noun}({noun}):\n    return {noun}\n\n\n'
            f"def load_{noun}(key):\n    return CACHE.get(key)\n\n\nCACHE = {{}}\n")


def compat_text(live: str, what: str) -> str:
    """The shim for old clients: the live code with a deprecation call in every function, under a
    docstring that talks about {what} more than the live module does (so words favour the copy)."""
    body = re.sub(r"(\ndef [^\n]*:\n)", r"\1    warn_compat()\n", live.split("\n", 1)[1])
    return f'"""Compat shim for old clients: store, load and validate {what}; {what} stored here."""\n' + body


def build_shop(root: Path, changes: list[tuple[str, str, str]] = CHANGES) -> HistoryBuilder:
    """The planted history: live modules imported by the app, one commit per (change, module), then
    the compat copies synced in one commit over every file (more than 3 files: not a question)."""
    b = HistoryBuilder(root / "shop")
    for module, _, noun in TOPICS:
        b.write(f"src/live/{module}.py", module_text(module, noun))
    b.write("src/app.py", "".join(f"from src.live import {m}\n" for m, _, _ in TOPICS)
            + "\n\ndef main():\n    return [" + ", ".join(m for m, _, _ in TOPICS) + "]\n")
    b.commit("Initial storage modules for the shop application")
    for old, new, message in changes:
        for module, what, noun in TOPICS:
            b.edit(f"src/live/{module}.py", old.format(noun=noun), new.format(noun=noun))
            b.commit(message.format(what=what))
    for module, what, _ in TOPICS:
        b.write(f"src/compat/{module}.py", compat_text((b.repo / f"src/live/{module}.py").read_text(), what))
    b.commit("Sync the compat copies of every storage module for old clients")
    return b
