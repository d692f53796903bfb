"""How much of a chunk is comments and docstrings (``codex_core.prose.prose_share``)."""

from __future__ import annotations

import pytest

from codex_core.prose import prose_share

PY_CLASS = '''class Signer:
    """Signs bytes with a secret key.

    The key is derived per salt.
    """

    default_digest_method = "sha1"
'''
PY_CODE = '''def derive_key(self):
    # one line of comment among code
    mac = hmac.new(self.secret_key, digestmod=self.digest_method)
    mac.update(self.salt)
    return mac.digest()
'''
RUST_DOC = '''/// Sets the global logger.
///
/// Returns an error if a logger was already set.
#[cfg(target_has_atomic = "ptr")]
pub fn set_logger(logger: &'static dyn Log) -> Result<(), SetLoggerError> {
    set_logger_inner(|| logger)
}
'''
GO_BLOCK = '''/* StrictSlash defines the trailing slash behavior
   for new routes. */
func (r *Router) StrictSlash(value bool) *Router {
	r.strictSlash = value
	return r
}
'''


def test_a_class_header_that_is_mostly_docstring_is_mostly_prose() -> None:
    assert prose_share(PY_CLASS, "python") == pytest.approx(3 / 5)


def test_code_with_a_comment_is_mostly_code() -> None:
    assert prose_share(PY_CODE, "python") == pytest.approx(1 / 5)


def test_doc_comments_count_in_rust_but_attributes_do_not() -> None:
    assert prose_share(RUST_DOC, "rust") == pytest.approx(3 / 7)


def test_a_block_comment_counts_until_it_closes() -> None:
    assert prose_share(GO_BLOCK, "go") == pytest.approx(2 / 6)


def test_a_one_line_docstring_and_a_string_assignment() -> None:
    assert prose_share('def f():\n    """Return one."""\n    return 1\n', "python") == pytest.approx(1 / 3)
    assert prose_share('SQL = """\nselect 1\n"""\n', "python") == 0.0


@pytest.mark.parametrize("language", ["markdown", "text", None])
def test_languages_without_code_are_not_judged(language) -> None:
    assert prose_share("# A heading\n\nSome words.", language) == 0.0
    assert prose_share("", "python") == 0.0
