"""``python -m deploy.local [--apis N] [--workers N] [--models SLUG ...] [--port P] [--var-dir DIR]``."""

from __future__ import annotations

from deploy.local.cli import main

raise SystemExit(main())
