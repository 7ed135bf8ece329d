"""`python -m dedup_server.workers --index N --ready-fd FD --parent PID`: one worker, started by the supervisor."""

from __future__ import annotations

import sys

from .worker import main

if __name__ == "__main__":
    sys.exit(main())
