"""How a segflow command ends when it cannot finish: the error kinds and the exit status of each.

These are part of the interface (``CONTRACT.md``): 2 for a bad flag or folder, 1 for data or storage, 0 after
``--help``, 143/130 for a stop. Every program reports one of them as one stderr line.
"""

from __future__ import annotations


class SegflowError(Exception):
    """An error a segflow program reports as one line; ``exit_code`` is the process status ``main`` returns."""

    exit_code = 1


class UsageError(SegflowError, ValueError):
    """A bad flag or flag combination: nothing was done; fix the command line (exit status 2)."""

    exit_code = 2


class DataError(SegflowError):
    """The flags are fine but the data (or model) they name cannot be used; the message says what to do
    (exit status 1)."""

    exit_code = 1


class HelpShown(SegflowError):
    """``--help`` was printed: nothing else to do (exit status 0)."""

    exit_code = 0


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the program (what Kubernetes, Vertex AI and Dataflow send to stop a job): raised in the
    main thread where Ctrl-C raises ``KeyboardInterrupt``, of which it is a kind, so that whatever cleans up on
    an interrupt (``finally`` blocks, a trainer saving a checkpoint) does so on a stop too. ``main`` reports it
    as "terminated", exit status 143."""


__all__ = ["DataError", "HelpShown", "SegflowError", "Terminated", "UsageError"]
