"""Benchmarks: timings that back the speed claims in docs/benchmarks.md."""
