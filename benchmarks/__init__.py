"""Benchmark programs (run from the repository root as ``python -m benchmarks.<name>``); protocol in
../shared/docs/benchmarks.md, shared helpers in :mod:`benchmarks.common`."""
