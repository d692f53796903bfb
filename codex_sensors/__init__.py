"""Sensors and schedules (git freshness, nightly eval) arrive with the lifecycle and eval issues."""
