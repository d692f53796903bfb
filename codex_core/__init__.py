"""Precision Codex domain logic. Framework-free: never imports dagster or fastapi."""
