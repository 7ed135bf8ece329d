"""Errors raised by the stack supervisor.

    StackError
    ├── PortInUseError        a port we need is taken (nothing was started)
    ├── ModelRepositoryError  the Triton model repository has not been built
    ├── ProcessStartError     a child exited or did not become ready in time (carries its log tail)
    └── StartCancelled        a stop was requested while a child was starting
"""

from __future__ import annotations


class StackError(Exception):
    """Base class for everything the supervisor raises on purpose."""


class PortInUseError(StackError):
    """One or more ports needed by the stack are already taken."""


class ModelRepositoryError(StackError):
    """The model repository is missing files; `make model` builds them."""


class ProcessStartError(StackError):
    """A child process exited during startup or did not get ready before its deadline."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        full = f"{message}\n--- last lines of its log ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.log_tail = log_tail


class StartCancelled(StackError):
    """Startup was abandoned because a stop was requested (Ctrl-C, SIGTERM, a sibling failed)."""
