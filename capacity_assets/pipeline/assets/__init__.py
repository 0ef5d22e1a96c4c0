"""Dagster assets: thin wiring over the pure core, one module per stage."""
