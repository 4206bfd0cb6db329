"""The plan: the sglang-kt command, its threads, memory and GPU budget, from host and model."""
