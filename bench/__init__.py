"""Benchmarks whose results are recorded in BENCHMARKS.md."""
