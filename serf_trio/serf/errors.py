"""``SerfError``: a command the Serf core refuses, with Serf's own error text.

It lives apart from ``node`` so the components that check commands (``events``, ``queries``)
can raise it; ``serf.node`` re-exports it, which is where callers import it from.
"""

from __future__ import annotations


class SerfError(Exception):
    """A command refused; ``str(exc)`` is Serf's error text."""


__all__ = ["SerfError"]
