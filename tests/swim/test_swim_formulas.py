"""Table tests for the scaling formulas; the cases are memberlist's own (util_test.go,
suspicion_test.go, awareness_test.go) plus the LAN numbers seen in captures of the real agent."""

from __future__ import annotations

import pytest

from serf_trio.swim.formulas import (
    awareness_scaled,
    push_pull_scale,
    remaining_suspicion_time,
    retransmit_limit,
    suspicion_confirmations_wanted,
    suspicion_max_timeout,
    suspicion_timeout,
)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(5, 1.0), (10, 1.0), (50, 1.698), (100, 2.0), (500, 2.698), (1000, 3.0)],
)
def test_suspicion_timeout_memberlist_table(n: int, expected: float) -> None:
    # memberlist TestSuspicionTimeout: suspicionTimeout(3, n, 1s) / 3
    assert suspicion_timeout(3, n, 1.0) / 3 == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("mult", "n", "interval", "expected"),
    [
        (4, 0, 1.0, 4.0),  # max(1, n) guards log10(0)
        (4, 1, 1.0, 4.0),
        (4, 3, 1.0, 4.0),  # captured: LAN, 3 nodes -> 4 s (05-failure)
        (4, 10_000, 1.0, 16.0),  # config.py: 10k nodes -> 16 s min
        (6, 10_000, 5.0, 120.0),  # WAN at 10k
        (4, 2000, 1.0, 4 * 3.301),  # log10(2000) = 3.30103 truncated to 3.301
    ],
)
def test_suspicion_timeout_values(mult: int, n: int, interval: float, expected: float) -> None:
    assert suspicion_timeout(mult, n, interval) == pytest.approx(expected, abs=1e-9)


def test_suspicion_max_timeout_is_mult_times_min() -> None:
    assert suspicion_max_timeout(4, 6, 10_000, 1.0) == pytest.approx(96.0)


@pytest.mark.parametrize(
    ("mult", "n", "k"), [(4, 3, 0), (4, 4, 2), (4, 100, 2), (3, 3, 1), (2, 50, 0)]
)
def test_confirmations_wanted(mult: int, n: int, k: int) -> None:
    assert suspicion_confirmations_wanted(mult, n) == k


@pytest.mark.parametrize(
    ("c", "k", "elapsed", "expected"),
    [
        # memberlist TestSuspicion_remainingSuspicionTime (min 2 s, max 30 s)
        (0, 3, 0.0, 30.0),
        (1, 3, 2.0, 14.0),
        (2, 3, 3.0, 4.81),
        (3, 3, 4.0, -2.0),
        (4, 3, 5.0, -3.0),
        (5, 3, 10.0, -8.0),
    ],
)
def test_remaining_suspicion_time_memberlist_table(
    c: int, k: int, elapsed: float, expected: float
) -> None:
    assert remaining_suspicion_time(c, k, elapsed, 2.0, 30.0) == pytest.approx(expected, abs=1e-9)


def test_remaining_suspicion_time_without_confirmations_wanted_is_min() -> None:
    assert remaining_suspicion_time(0, 0, 1.0, 4.0, 24.0) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(3, 0, 0), (3, 1, 3), (3, 99, 6), (4, 3, 4), (4, 10_000, 20), (4, 9, 4), (4, 10, 8)],
)
def test_retransmit_limit(mult: int, n: int, expected: int) -> None:
    # first three rows: memberlist TestRetransmitLimit; (4, 3) is the captured leave x4
    assert retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "mult"),
    [(0, 32, 1), (33, 64, 2), (65, 128, 3), (129, 256, 4), (10_000, 10_000, 10)],
)
def test_push_pull_scale_memberlist_table(lo: int, hi: int, mult: int) -> None:
    for n in range(lo, hi + 1):
        assert push_pull_scale(1.0, n) == mult, n


@pytest.mark.parametrize(("score", "expected"), [(0, 1.0), (1, 2.0), (7, 8.0)])
def test_awareness_scaled(score: int, expected: float) -> None:
    assert awareness_scaled(1.0, score) == expected
