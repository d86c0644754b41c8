"""Benchmark scripts (not tests): run them with `python -m benchmarks.NAME`; figures in
docs/benchmarks/."""
