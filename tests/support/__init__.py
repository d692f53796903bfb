"""Helpers shared by the test modules (real parts only: nothing here fakes a component)."""
