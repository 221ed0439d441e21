"""Concurrency control's verdict: was the parallel burst shed *because of its concurrency*?

A 429 or a 503 alone does not say why a request was refused: nginx's `limit_req` refuses by
rate with either status. So each refusal (429 or 503) of the parallel burst gets one cause,
from the strongest evidence it carries:

1. its reason (a ``X-Crisis-Reason`` header, or a JSON body's ``"reason"``, as the guard sends):
   queue_full, queue_timeout, overloaded → ``concurrency``; rate_limited → ``rate_limit``;
   emergency, memory, circuit_open → those names (a mode, the memory budget or a breaker,
   not concurrency control);
   anything else → ``other``;
2. ``RateLimit*`` / ``X-RateLimit*`` headers → ``rate_limit`` (a rate policy speaking);
3. a ``Retry-After`` longer than max(2 s, the burst's span) → ``rate_limit``: a shedder asks
   for a prompt retry, a rate limit for the reset of its window, long relative to the test;
4. status 429 → ``rate_limit`` (RFC 6585: too many requests in a given amount of time);
5. a 503 with none of the above → ``unexplained``, judged by the time shape of the refusals.

The time shape. A concurrency limit refuses a request only while the service is full, so
(a) no request sent alone (in-flight 1: the sequential probes before and after the burst) is
refused, and (b) the refusals come while the served requests in flight are near their peak:
for each refusal, n = the served requests (2xx/3xx) sent before it and not yet answered when it
was sent; M = the peak of served requests in flight during the burst; the refusal is *at the
limit* when n ≥ max(1, M / 2); and (c) M stays below the burst's connections (a service that
once held every connection's request at the same time had room: its refusals were not for
concurrency). A rate limit refuses by count over time: requests sent alone too, once its
allowance is spent, and, after its first allowance, while only r × W requests (its refill
rate times the service time) are in flight, well below the first moment's peak. The
unexplained refusals are counted as concurrency shedding when (a) and (c) hold and at least
`AT_LIMIT_SHARE` of them are at the limit.

The check passes when at least one refusal was concurrency shedding and nothing failed instead:
no timeout, no transport error, no 5xx other than 503, and the burst finished in its time.
What timing cannot tell: a rate limit answering 503 with no reason and no header, whose
allowance equals the peak and whose refill rate r equals M ÷ W, refuses exactly as a
concurrency limit M would (Little's law: in-flight = rate × W) on a route of fixed latency W;
the reason (or a 429) is then the only evidence, and the check says what it relied on.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crisisctl.validate.exchange import Exchange
from crisisctl.validate.report import CheckResult, Tally

#: refusal reasons that mean "the service is full" (the guard's queue and overload states)
CONCURRENCY_REASONS = frozenset({"queue_full", "queue_timeout", "overloaded"})
#: refusal reasons that mean "too many requests for the rate allowed"
RATE_REASONS = frozenset({"rate_limited"})
#: refusals that are neither: a mode, the memory budget or a breaker turning requests away
NAMED_REASONS = frozenset({"emergency", "memory", "circuit_open"})
#: a Retry-After at least this long (and longer than the burst) speaks of a rate window
LONG_RETRY_FLOOR_S = 2.0
#: share of unexplained refusals that must come at the limit for them to count as shedding
AT_LIMIT_SHARE = 0.8
CONCURRENCY = "concurrency"
RATE_LIMIT = "rate_limit"
UNEXPLAINED = "unexplained"


def refusal_cause(ex: Exchange, long_retry_s: float) -> str:
    """The cause of one refusal (see the module docstring for the order of the evidence)."""
    if ex.reason is not None:
        if ex.reason in CONCURRENCY_REASONS:
            return CONCURRENCY
        if ex.reason in RATE_REASONS:
            return RATE_LIMIT
        return ex.reason if ex.reason in NAMED_REASONS else "other"
    if ex.rate_headers:
        return RATE_LIMIT
    if ex.retry_after_s is not None and ex.retry_after_s >= long_retry_s:
        return RATE_LIMIT
    if ex.status == 429:
        return RATE_LIMIT
    return UNEXPLAINED


def served_in_flight(exchanges: Sequence[Exchange]) -> tuple[list[int], int]:
    """For each exchange, the served exchanges in flight when it was sent (itself included when
    served), and the peak of that count over the served ones (0 when none was served).

    A served exchange j is in flight at time t when j.sent ≤ t < j.done.
    """
    served = [ex for ex in exchanges if ex.served]
    starts = sorted(ex.sent for ex in served)
    ends = sorted(ex.done for ex in served)

    def at(t: float) -> int:
        return bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)

    counts = [at(ex.sent) for ex in exchanges]
    peak = max((n for n, ex in zip(counts, exchanges, strict=True) if ex.served), default=0)
    return counts, peak


@dataclass(frozen=True, slots=True)
class Shape:
    """How the unexplained refusals sat against the requests in flight (module docstring)."""

    peak_served_in_flight: int
    unexplained: int
    at_limit: int
    refused_alone: int
    connections: int

    @property
    def limit_floor(self) -> int:
        """The served-in-flight count from which a refusal is at the limit."""
        return max(1, math.ceil(self.peak_served_in_flight / 2))

    @property
    def tracks_concurrency(self) -> bool:
        """Whether the unexplained refusals behave as concurrency shedding."""
        return (
            self.unexplained > 0
            and self.refused_alone == 0
            and 1 <= self.peak_served_in_flight < self.connections
            and self.at_limit >= AT_LIMIT_SHARE * self.unexplained
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "peak_served_in_flight": self.peak_served_in_flight,
            "unexplained_refusals": self.unexplained,
            "at_limit": self.at_limit,
            "at_limit_from": self.limit_floor,
            "unexplained_refused_alone": self.refused_alone,
            "connections": self.connections,
            # None: no 503 needed the time shape (every refusal said why)
            "tracks_concurrency": self.tracks_concurrency if self.unexplained else None,
        }


def judge_shape(
    burst: Sequence[Exchange], alone: Sequence[Exchange], long_retry_s: float, connections: int
) -> Shape:
    """The `Shape` of the burst's unexplained refusals, given the requests sent alone."""
    counts, peak = served_in_flight(burst)
    floor = max(1, math.ceil(peak / 2))
    unexplained = [
        n
        for n, ex in zip(counts, burst, strict=True)
        if ex.refused and refusal_cause(ex, long_retry_s) == UNEXPLAINED
    ]
    refused_alone = sum(
        1 for ex in alone if ex.refused and refusal_cause(ex, long_retry_s) == UNEXPLAINED
    )
    at_limit = sum(1 for n in unexplained if n >= floor)
    return Shape(peak, len(unexplained), at_limit, refused_alone, connections)


def tally_of(exchanges: Sequence[Exchange]) -> Tally:
    """The exchanges counted as the other checks count requests."""
    tally = Tally()
    for ex in exchanges:
        if ex.status is None:
            tally.error(ex.error or "other")
        else:
            tally.response(ex.status, ex.ms)
    return tally


def _counts(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _causes_text(causes: dict[str, int]) -> str:
    return ", ".join(f"{n}× {cause.replace('_', ' ')}" for cause, n in causes.items())


def evaluate_concurrency(
    burst: Sequence[Exchange],
    alone: Sequence[Exchange],
    *,
    planned: int,
    connections: int,
    span_s: float,
    timed_out: bool = False,
) -> CheckResult:
    """Concurrency control's verdict on a parallel `burst` and the requests sent `alone`."""
    long_retry_s = max(LONG_RETRY_FLOOR_S, span_s)
    tally = tally_of(burst)
    tally.timed_out = timed_out
    causes = [refusal_cause(ex, long_retry_s) for ex in burst if ex.refused]
    by_cause = _counts(causes)
    shape = judge_shape(burst, alone, long_retry_s, connections)
    shed = by_cause.get(CONCURRENCY, 0)
    if shape.tracks_concurrency:
        shed += shape.unexplained
    alone_refused = [ex for ex in alone if ex.refused]
    other_5xx = tally.server_errors(allow=(503,))
    transport = sum(tally.errors.values())
    evidence = tally.evidence()
    evidence.update(
        planned_requests=planned,
        connections=connections,
        span_s=round(span_s, 3),
        refused=len(causes),
        shed=shed,
        rate_limited=by_cause.get(RATE_LIMIT, 0),
        causes=by_cause,
        shape=shape.to_dict(),
        alone={
            "requests": len(alone),
            "refused": len(alone_refused),
            "causes": _counts([refusal_cause(ex, long_retry_s) for ex in alone_refused]),
            "latency_ms": tally_of(alone).evidence()["latency_ms"],
        },
        timeouts=tally.errors.get("timeout", 0),
        transport_errors=transport,
        other_5xx=other_5xx,
    )
    problems: list[str] = []
    if shed == 0:
        problems.append(_nothing_shed(tally, by_cause, shape, len(alone_refused), len(alone)))
    if transport:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(tally.errors.items()))
        problems.append(f"requests failed instead of being shed ({kinds})")
    if other_5xx:
        problems.append(f"{other_5xx} responses were 5xx other than 503")
    if timed_out:
        problems.append("the burst did not finish in its time")
    if problems:
        return CheckResult("concurrency_control", False, "; ".join(problems) + ".", evidence)
    if by_cause.get(CONCURRENCY, 0):
        how = f"(the service's own reason: {_reasons_text(burst, long_retry_s)})"
    else:
        how = (
            f"(503s that came only while the service was full, peak {shape.peak_served_in_flight} "
            "served in flight, none to a request sent alone)"
        )
    others = len(causes) - shed
    tail = (
        f"; {others} other refusals ({_causes_text(_without(by_cause, shape))}) not counted"
        if others
        else ""
    )
    return CheckResult(
        "concurrency_control",
        True,
        f"{connections} parallel connections: {shed} of {tally.requests} requests shed for "
        f"concurrency {how}{tail}; no timeouts.",
        evidence,
    )


def _reasons_text(burst: Sequence[Exchange], long_retry_s: float) -> str:
    reasons = [
        str(ex.reason)
        for ex in burst
        if ex.refused and refusal_cause(ex, long_retry_s) == CONCURRENCY
    ]
    return ", ".join(f"{n}× {reason}" for reason, n in _counts(reasons).items())


def _without(by_cause: dict[str, int], shape: Shape) -> dict[str, int]:
    """The causes other than concurrency shedding."""
    out = {k: v for k, v in by_cause.items() if k != CONCURRENCY}
    if shape.tracks_concurrency:
        out.pop(UNEXPLAINED, None)
    return out


def _nothing_shed(
    tally: Tally, by_cause: dict[str, int], shape: Shape, alone_refused: int, alone: int
) -> str:
    statuses = ", ".join(f"{n}×{code}" for code, n in sorted(tally.statuses.items()))
    if not by_cause:
        return f"nothing was shed with 429/503 ({statuses or 'no response'})"
    parts = [f"no refusal was concurrency shedding: {_causes_text(by_cause)}"]
    if by_cause.get(RATE_LIMIT):
        parts.append("a rate limit is not concurrency control")
    if shape.unexplained and not shape.tracks_concurrency:
        if shape.refused_alone:
            parts.append(f"{shape.refused_alone} 503s came to requests sent alone")
        if shape.peak_served_in_flight >= shape.connections:
            parts.append(
                f"the service once held all {shape.connections} connections' requests at "
                "the same time: it had room"
            )
        elif shape.at_limit < AT_LIMIT_SHARE * shape.unexplained:
            parts.append(
                f"only {shape.at_limit} of {shape.unexplained} 503s came while the service was "
                f"full (≥ {shape.limit_floor} of a peak of {shape.peak_served_in_flight} served "
                "in flight)"
            )
    elif alone_refused:
        parts.append(f"{alone_refused} of {alone} requests sent one at a time were refused too")
    return "; ".join(parts)
