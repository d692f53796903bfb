"""Question style of a query: a plain question a person asks, or text shaped like a commit message.

The calibrator learns from both styles (``codex_core.evalsets``: mined commit messages and plain
questions) and reads the style as a feature; serving logs the style of every query it answers, so
the drift report can see when the mix users bring moves away from the mix the calibrator was
fitted for. One rule serves all three, so they always agree:

1. the query ends with ``?``                                          -> ``question``
2. its first word is a question word (how, where, why, what, which, who), also after one
   leading preposition ("in which file ...")                              -> ``question``;
   or an auxiliary (does, is, can, should, ...) not followed by "not"     -> ``question``;
   or "when" followed by an auxiliary ("when is the cache flushed")       -> ``question``
   ("Do not retry ...", "When the file is missing, ..." stay commit-like)
3. it starts with a request for an explanation or a location ("explain ...", "describe ...",
   "show me ...", "tell me ...", "find where ...", "find the code ...")  -> ``question``
4. anything else -> ``commit``: an imperative or past-tense verb ("Add retries to the client",
   "Fixed the parser"), or a noun phrase ("Parser cleanup").

The rule is deliberately simple and only looks at the words: it runs on every served query in
microseconds. A misread query counts in the wrong style share and gets the other style's
``question_like`` feature; the calibrator is fitted on the same rule's verdicts, so it learns with
the rule's errors included.
"""

from __future__ import annotations

import re

QUESTION = "question"
COMMIT = "commit"
QUERY_STYLES = (QUESTION, COMMIT)

QUESTION_WORDS = frozenset({"how", "where", "why", "what", "which", "who", "whom", "whose", "whence"})
# Start a question only when a subject follows ("does the parser ...", not "Do not retry ...").
AUXILIARIES = frozenset({
    "does", "do", "did", "is", "are", "was", "were", "can", "could", "should", "would", "will", "shall",
})  # fmt: skip
_PREPOSITIONS = frozenset({"in", "on", "at", "for", "from", "to", "with", "by", "under", "and", "so", "but", "then"})
_EXPLAIN_VERBS = frozenset({"explain", "describe", "summarize", "summarise", "locate"})
_REQUEST_VERBS = frozenset({"show", "tell", "find", "list", "point", "give"})
_REQUEST_OBJECTS = frozenset({
    "me", "us", "where", "how", "what", "which", "why", "who", "when",
    "the code", "the file", "the function", "the class", "the place", "the module", "the method",
})  # fmt: skip
_WORD = re.compile(r"[A-Za-z']+")


def question_style(query: str) -> str:
    """``"question"`` or ``"commit"`` by the rule in the module docstring."""
    text = (query or "").strip()
    if text.rstrip("\"')]} ").endswith("?"):
        return QUESTION
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return COMMIT
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    if first in QUESTION_WORDS or (first in _PREPOSITIONS and second in QUESTION_WORDS):
        return QUESTION
    if first in AUXILIARIES and second and second != "not":
        return QUESTION
    if first == "when" and second in AUXILIARIES:
        return QUESTION
    if first in _EXPLAIN_VERBS:
        return QUESTION
    if first in _REQUEST_VERBS and (second in _REQUEST_OBJECTS or " ".join(words[1:3]) in _REQUEST_OBJECTS):
        return QUESTION
    return COMMIT


def is_question(query: str) -> bool:
    return question_style(query) == QUESTION
