"""Helpers shared by the tests and the benchmarks (an importable package: tests.support)."""
