"""User-facing errors.

A :class:`MedaiError` carries one line that says what is wrong and what to do. The CLI prints it as
``error: <message>`` and exits non-zero without a traceback; widgets show it as a notification.
"""

from __future__ import annotations


class MedaiError(Exception):
    """A refused input or an impossible request, explained in one line."""

    def __init__(self, message: str):
        # One line only: newlines would break `error:` parsing in scripts.
        super().__init__(" ".join(str(message).split()))


class CancelledError(MedaiError):
    """The user (or a caller's ``should_stop``) cancelled the job."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)
