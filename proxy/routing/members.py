"""Which upstreams may serve a request, in which order, and what each one's health is.

Candidates are the upstreams that serve the request's model, lowest priority first. Within
a priority the pick is weighted least-in-flight: the fewest calls in flight per unit of
weight, ties shared by smooth weighted round robin (nginx's), so sequential traffic splits
exactly by weight. Upstreams that cannot serve now are skipped without spending the
request's time: an open circuit, a cold Space (asleep or building), one cooling down after a
429, a GPU-quota error, a full queue or another failure, and, while another can take the
call, one at its concurrency bound. The wait is the one mechanism that decides when a failed
upstream is tried again (its own circuit breaker does not open behind the router): once it is
over, one call at a time probes it, and the router also probes it in the background then.
"""

from __future__ import annotations

import math
from typing import Literal

from msgspec import Struct, field

from proxy.errors import (
    GatewayError,
    UpstreamBusy,
    UpstreamRateLimited,
    UpstreamStarting,
    UpstreamUnavailable,
)
from proxy.routing.resilient import ResilientUpstream

State = Literal["ready", "cold", "cooling", "open"]


class Member(Struct, eq=False):
    """One upstream of UPSTREAMS_FILE, and what the router knows of its health."""

    name: str
    upstream: ResilientUpstream
    models: frozenset[str]  # empty: every model
    priority: int = 0
    weight: int = 1
    can_continue: bool = False
    in_flight: int = 0
    current: float = 0.0  # its smooth-weighted-round-robin credit
    cold: bool = False  # asleep, building or down: skipped until a wake-up call finds it up
    cool_until: float = 0.0  # skipped until then (loop time) after a failure
    # Once a failed upstream's wait is over, one call at a time is let through (the probe)
    # until one succeeds; the others keep to the other upstreams meanwhile.
    probing: bool = False
    # Why it is skipped: the failure that made it cold or cooling.
    skip_error: GatewayError | None = None
    woken_at: float = -math.inf
    published: str = field(default="")  # the state its metric shows

    def serves(self, model: str) -> bool:
        return not self.models or model in self.models

    def state(self, now: float, model: str | None = None) -> State:
        if self.cold:
            return "cold"
        if now < self.cool_until or self.probing:
            return "cooling"
        if model is not None:
            return "open" if self.upstream.blocked(model) else "ready"
        return "open" if self.upstream.open_models() else "ready"

    def wait(self, now: float, model: str) -> int:
        """Seconds until it may serve ``model`` again, as Retry-After says them."""
        if self.cold:
            asked = self.skip_error.retry_after if self.skip_error is not None else None
            return max(1, asked or 10)
        if now < self.cool_until:
            return max(1, math.ceil(self.cool_until - now))
        return max(1, self.upstream.retry_after(model))

    @property
    def on_probation(self) -> bool:
        """Whether its last call failed and none has succeeded since: its next call is the
        probe that says whether it is back."""
        return self.skip_error is not None and not self.cold

    @property
    def worth_a_try(self) -> bool:
        """Cooling only after a failure that may have been a moment's (a reset, a 500, a
        refused connection): tried anyway when nothing else can serve."""
        return not self.cold and not isinstance(self.skip_error, UpstreamRateLimited | UpstreamBusy)


class Plan(Struct, frozen=True):
    """The upstreams to try for one request, in order, and those skipped."""

    candidates: list[Member]
    skipped: list[Member]


def _load(member: Member) -> float:
    return member.in_flight / member.weight


def _pick(group: list[Member]) -> Member:
    """Weighted least-in-flight; ties by smooth weighted round robin."""
    least = min(_load(m) for m in group)
    tied = [m for m in group if _load(m) == least]
    if len(tied) == 1:
        return tied[0]
    total = 0
    for member in tied:
        member.current += member.weight
        total += member.weight
    chosen = max(tied, key=lambda m: m.current)
    chosen.current -= total
    return chosen


def plan(members: list[Member], model: str, now: float, exclude: frozenset[Member]) -> Plan:
    """The order to try ``members`` (already sorted by priority) for ``model``."""
    ready: list[Member] = []
    skipped: list[Member] = []
    for member in members:
        if member in exclude or not member.serves(model):
            continue
        (ready if member.state(now, model) == "ready" else skipped).append(member)
    free = [m for m in ready if not m.upstream.in_use]
    full = [m for m in ready if m.upstream.in_use]
    ordered: list[Member] = []
    picked = False
    index = 0
    while index < len(free):
        priority = free[index].priority
        group = [m for m in free[index:] if m.priority == priority]
        index += len(group)
        if not picked:  # only the group that takes the request moves the round robin
            first = _pick(group)
            picked = True
            rest = sorted((m for m in group if m is not first), key=_order)
            ordered += [first, *rest]
        else:
            ordered += sorted(group, key=_order)
    ordered += sorted(full, key=_order)  # at their bound: they queue, as a last resort
    return Plan(ordered, skipped)


def _order(member: Member) -> tuple[float, int]:
    return (_load(member), -member.weight)


def unavailable(skipped: list[Member], model: str, now: float) -> GatewayError:
    """The answer when every upstream of ``model`` is skipped: 503 upstream_starting when one
    is cold, a full queue's 503 or a 429 when all are out of quota or rate limited, else
    503 upstream_unavailable (open circuits), with the smallest Retry-After among them."""
    wait = min(m.wait(now, model) for m in skipped)
    names = ", ".join(f"{m.name} ({m.state(now, model)})" for m in skipped)
    errors = [m.skip_error for m in skipped]
    if any(m.cold for m in skipped):
        return UpstreamStarting(
            f"no upstream of {model} can serve now: {names}; retry later", retry_after=wait
        )
    if errors and all(isinstance(e, UpstreamRateLimited) for e in errors):
        return UpstreamRateLimited(
            f"every upstream of {model} is rate limited or out of quota: {names}",
            retry_after=wait,
        )
    if any(isinstance(e, UpstreamBusy) for e in errors):
        return UpstreamBusy(f"every upstream of {model} is busy: {names}", retry_after=wait)
    return UpstreamUnavailable(
        f"no upstream of {model} can serve now: {names}; retry later", retry_after=wait
    )


def settle(member: Member, error: GatewayError, now: float, cooldown: float) -> None:
    """What a failure before or during output says about ``member``'s next minutes."""
    if isinstance(error, UpstreamStarting):
        member.cold = True
        member.skip_error = error
    elif isinstance(error, UpstreamRateLimited | UpstreamBusy):
        # The wait the upstream named (its Retry-After, a ZeroGPU message), else the
        # cool-down: never a default of ours on top of it.
        wait = error.upstream_wait
        member.cool_until = now + (wait if wait is not None else cooldown)
        member.skip_error = error
    elif not error.request_fault:
        member.cool_until = now + cooldown
        member.skip_error = error


def recovered(member: Member) -> None:
    member.cold = False
    member.cool_until = 0.0
    member.skip_error = None
    member.probing = False
