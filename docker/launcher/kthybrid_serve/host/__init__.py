"""The host as the launcher reads it: CPUs, NUMA, memory, cgroup limits, GPUs."""
