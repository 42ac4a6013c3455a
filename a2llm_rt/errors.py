"""Exceptions that users see. Every message names the file (when there is one) and the problem."""

from __future__ import annotations

from pathlib import Path


class A2LLMError(Exception):
    """Base class of the project's own errors."""


class InputError(A2LLMError, ValueError):
    """Bad input: a wrong shape, NaN/inf, an unknown name, a truncated or malformed file.

    ``InputError("NaN in frame 12", path="clip.npz")`` reads ``clip.npz: NaN in frame 12``.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.problem = message
        super().__init__(f"{path}: {message}" if path is not None else message)
