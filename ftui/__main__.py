"""`python -m ftui ...` runs the command-line interface."""

from ftui.cli import main

raise SystemExit(main())
