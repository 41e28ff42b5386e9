"""Errors meant for the person using the tool.

Everything that goes wrong because of the input (a missing file, a corrupt checkpoint, an unknown
feature, an offline download) is raised as a :class:`FalconError`: a sentence saying what is wrong,
and a hint saying what to do. The command line prints both; the app shows them in a message box.
"""

from __future__ import annotations


class FalconError(Exception):
    """A problem with the user's input or environment, with a hint on how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\nWhat to do: {self.hint}"


class BadImageError(FalconError):
    """One image of a probe set cannot be read (corrupt, empty, truncated, too large)."""


class OfflineError(FalconError):
    """Weights or data must be downloaded, and the download failed."""


OFFLINE_HINT = (
    "This machine cannot download it. Point the tool at a local file instead "
    "(a checkpoint path, an image folder, a caption file), or use the offline demo world "
    "(the default in the app and the command line)."
)
