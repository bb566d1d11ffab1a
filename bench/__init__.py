"""Benchmarks. Not imported by the application; see bench/README.md."""
