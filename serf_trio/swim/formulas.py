"""Scaling formulas of the membership core (memberlist ``util.go`` / ``suspicion.go``).

Pure functions of the cluster size and the configured multipliers. Every constant here is a
protocol fact (memberlist util.go, suspicion.go, awareness.go); the table tests in
``tests/swim/test_swim_formulas.py`` carry memberlist's own cases. Times are float seconds;
where memberlist rounds a ``time.Duration`` we round the same way so timeouts match the real
agent to the millisecond.
"""

from __future__ import annotations

import math

PUSH_PULL_SCALE_THRESHOLD = 32  # memberlist pushPullScaleThreshold


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """Lifeguard's *minimum* suspicion timeout.

    ``suspicion_mult x max(1, log10(max(1, n))) x interval`` where the log factor is truncated
    to three decimals (memberlist multiplies by 1000 and converts to an integer Duration).
    ``n`` is every node in the local list, including ourselves and dead/left ones.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    milli_scale = math.floor(node_scale * 1000)
    return suspicion_mult * milli_scale * interval / 1000


def suspicion_max_timeout(
    suspicion_mult: int, max_timeout_mult: int, n: int, interval: float
) -> float:
    """The suspicion timer's starting value when confirmations are expected."""
    return max_timeout_mult * suspicion_timeout(suspicion_mult, n, interval)


def suspicion_confirmations_wanted(suspicion_mult: int, n: int) -> int:
    """``k``: independent confirmations that shrink the timer from max to min.

    memberlist: ``SuspicionMult - 2``, or 0 when the cluster is too small to supply that many
    (the accused node and ourselves cannot confirm).
    """
    k = suspicion_mult - 2
    if n - 2 < k:
        k = 0
    return max(0, k)


def remaining_suspicion_time(
    confirmations: int, k: int, elapsed: float, min_timeout: float, max_timeout: float
) -> float:
    """Time left on a suspicion timer after ``confirmations`` of ``k`` wanted arrived.

    The total timeout decays logarithmically from max towards min:
    ``max - ln(c + 1) / ln(k + 1) x (max - min)``, floored to whole milliseconds and never
    below min; the result is that total minus ``elapsed`` (negative = already overdue).
    With ``k == 0`` no confirmation is expected and the total is simply min.
    """
    if k <= 0:
        total = min_timeout
    else:
        frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
        raw = max_timeout - frac * (max_timeout - min_timeout)
        total = math.floor(1000.0 * raw + 1e-9) / 1000.0
        total = max(total, min_timeout)
    return total - elapsed


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times one broadcast is sent: ``retransmit_mult x ceil(log10(n + 1))``."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def push_pull_scale(interval: float, n: int) -> float:
    """Push/pull period for ``n`` nodes: unchanged up to 32, then one more interval per doubling."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return multiplier * interval


def awareness_scaled(timeout: float, score: int) -> float:
    """Lifeguard local health: a timeout stretched by ``score + 1``."""
    return timeout * (score + 1)


def next_tick(at: float, period: float, now: float) -> float:
    """The first tick after ``now`` of a ticker that ticked (or was due) at ``at <= now``,
    keeping its phase: ticks missed meanwhile are dropped, as Go's ``time.Ticker`` drops
    them (memberlist's probe, gossip and push/pull rounds run on tickers)."""
    if period <= 0:
        return now + period
    nxt = at + math.ceil((now - at) / period + 1e-9) * period
    return nxt if nxt > now else nxt + period
