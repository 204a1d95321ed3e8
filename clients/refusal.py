"""The one exception a use case raises to refuse: a plain sentence for the user.

The use cases (:mod:`clients.sender`, :mod:`clients.decisions`) raise :class:`RefusedError`
for an outcome the user must be told about (a receipt that does not verify, a decision
that is already final, ...); the ``notice`` CLI prints it as one line and exits 1.
"""

from __future__ import annotations

__all__ = ["RefusedError", "one_line"]


class RefusedError(Exception):
    """A refusal, worded for the user in one sentence."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(str(text).split()) or "failed"
