"""Reviewed vocabulary tables (YAML), read by engine.vocab."""
