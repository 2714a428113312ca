"""`python -m ftui.doctor DATA [--json]` (the same as `python -m ftui check`)."""

from ftui.doctor.cli import main

raise SystemExit(main())
