"""Specs: YAML -> pydantic models -> expanded runs, and run identity."""
