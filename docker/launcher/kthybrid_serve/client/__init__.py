"""Clients of a running server: the terminal chat and the serving benchmark."""
