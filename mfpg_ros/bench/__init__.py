"""Benchmarks (wired as `mfpg bench ...`)."""
