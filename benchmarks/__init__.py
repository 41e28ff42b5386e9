"""Benchmarks of the app (run from the repository root: ``python -m benchmarks.<name>``).

The library's own benchmarks (recovery, timings) are ``python -m falcon_core.bench``.
"""
