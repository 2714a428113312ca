"""Benchmark commands that print tables (speed against references, recipes against alternatives)."""
