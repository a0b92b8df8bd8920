"""ctxmem performance suites; run them all with ``python -m benchmarks``."""
