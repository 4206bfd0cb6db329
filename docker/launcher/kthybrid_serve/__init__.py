"""kthybrid-serve: plan, validate and start a CPU-GPU hybrid sglang-kt server."""

__version__ = "0.1.0"
