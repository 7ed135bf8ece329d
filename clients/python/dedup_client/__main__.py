"""``python -m dedup_client``."""

from .cli import main

raise SystemExit(main())
