"""The package's exceptions.

Every error pml-rt raises on purpose derives from :class:`PmlError`, so callers can catch
one type. Bad arguments and bad input files are also ``ValueError``; calls made in the wrong
order are also ``RuntimeError``; a missing optional library is also ``ImportError``. Each
message says what was expected and how to fix it.
"""

from __future__ import annotations


class PmlError(Exception):
    """Base class of every error raised on purpose by pml-rt."""


class InputError(PmlError, ValueError):
    """A video, frame, mask or annotation does not fit what was expected.

    The message names the file (where there is one), the frame and what was expected.
    """


class StateError(PmlError, RuntimeError):
    """A call came in the wrong order (for example masks asked for before any annotation)."""


class MissingDependencyError(PmlError, ImportError):
    """An optional library is absent; the message names the ``pip install`` that brings it."""


class BackendError(PmlError, RuntimeError):
    """An inference backend cannot be used here (absent library, missing engine, no device)."""


class OutputError(PmlError, OSError):
    """An output (masks, overlay, cache) cannot be written: full disk, no permission.

    Also an ``OSError`` with the original ``errno``.
    """
