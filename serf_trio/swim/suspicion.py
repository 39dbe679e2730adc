"""One node's suspicion timer with Lifeguard confirmations (memberlist ``suspicion.go``).

Rule: the timer starts at ``max`` when ``k >= 1`` confirmations are wanted, else at ``min``.
Each suspect message from a *new* accuser (up to ``k``) shortens the total timeout
logarithmically towards ``min`` (``formulas.remaining_suspicion_time``), measured from the
start.  The record is pure data: the node's timer heap owns the wall-clock side and asks
``deadline`` after every confirmation.

With Lifeguard disabled the record behaves as plain SWIM: ``k = 0``, the timeout is ``min`` and
confirmations never count.

``last_chances`` counts the direct reminders the node sent when the timer ran out before the
suspicion was fully confirmed (a deliberate improvement over memberlist 0.2.2, see
``node.Memberlist._suspicion_fired``); ``fully_confirmed`` says whether all ``k`` wanted
confirmations came, i.e. the timer shrank to ``min`` as memberlist's does.
"""

from __future__ import annotations

from .formulas import remaining_suspicion_time


class Suspicion:
    __slots__ = (
        "confirmers",
        "deadline",
        "k",
        "last_chances",
        "max_timeout",
        "min_timeout",
        "n",
        "start",
    )

    def __init__(
        self,
        accuser: str,
        k: int,
        min_timeout: float,
        max_timeout: float,
        now: float,
        *,
        lifeguard: bool = True,
    ) -> None:
        self.k = k if lifeguard else 0
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout if lifeguard else min_timeout
        self.start = now
        self.n = 0  # confirmations counted so far
        self.confirmers: set[str] = {accuser}
        self.deadline = now + (self.max_timeout if self.k >= 1 else self.min_timeout)
        self.last_chances = 0

    @property
    def fully_confirmed(self) -> bool:
        """Every wanted confirmation came (always true for plain SWIM, where ``k = 0``)."""
        return self.n >= self.k

    def confirm(self, accuser: str, now: float) -> tuple[bool, float]:
        """Count ``accuser`` if new and still wanted; return (counted, deadline).

        memberlist re-gossips the suspect message only when it counted.
        """
        if self.n >= self.k or accuser in self.confirmers:
            return False, self.deadline
        self.confirmers.add(accuser)
        self.n += 1
        remaining = remaining_suspicion_time(
            self.n, self.k, now - self.start, self.min_timeout, self.max_timeout
        )
        # A non-positive remainder fires at once (memberlist runs the timeout function).
        self.deadline = now + max(0.0, remaining)
        return True, self.deadline
