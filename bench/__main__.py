"""`python -m bench`: run a benchmark scenario and print the table."""

from .cli import main

raise SystemExit(main())
