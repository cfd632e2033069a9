"""scripts/bench: SecAuto's benchmark (outside the secauto package; run as ``python -m benchmarks``)."""
