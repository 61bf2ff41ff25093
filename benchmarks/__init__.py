"""Quality and speed benchmarks: run from the repository root as ``python -m benchmarks.NAME``."""
