"""`python -m gateway` is `dcr-gateway`."""

from .cli import main

raise SystemExit(main())
