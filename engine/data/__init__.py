"""Reviewed vocabulary tables (YAML), read by engine.core.vocab."""
