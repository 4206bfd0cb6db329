"""Makes `python -m kthybrid_serve` behave like the `kthybrid-serve` command."""

from kthybrid_serve.cli import main

raise SystemExit(main())
