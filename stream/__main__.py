"""`python -m stream` is the `recstream` command."""

from stream.cli import main

raise SystemExit(main())
