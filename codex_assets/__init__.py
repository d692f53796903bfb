"""Dagster assets of Precision Codex. Definitions are assembled only in ``definitions.py``."""
