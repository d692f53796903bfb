"""Scale-out tests: a real PostgreSQL server (the session's ``postgres`` fixture, tests/conftest.py),
started in a temporary directory and stopped at the end.

They skip, saying why, only where the PostgreSQL server binaries are absent.
"""
