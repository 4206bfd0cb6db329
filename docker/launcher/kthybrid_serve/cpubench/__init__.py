"""`kthybrid-serve bench` and `tune`: kt-kernel's CPU experts measured on this host."""
