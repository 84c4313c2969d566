"""Benchmarks (not part of the test suite). Run them with ``python bench/run.py``; see README.md."""
