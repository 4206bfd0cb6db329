"""The router tests' session fixtures, defined in router_fixtures.py (a name unique in tests/)."""

from router_fixtures import (  # noqa: F401
    backends,
    failover_router,
    key_file,
    router,
    router_image,
)
