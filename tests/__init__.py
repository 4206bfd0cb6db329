"""kthybrid's tests; tests.support holds what tests and benchmarks share."""
