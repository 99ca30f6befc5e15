"""Several upstreams behind one: failover before the first token, and a broken stream
continued by another upstream after it (see the README, "Several upstreams").

The router implements the Upstream protocol, so the gateway core (cache, single-flight,
FALLBACK=mock) stands on it unchanged. Its identity names no replica: a reply is cached under
the model it answers, whichever upstream produced it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import partial
from typing import TypeVar

from msgspec.structs import replace

from proxy.core.catalog import MODELS
from proxy.core.continuation import budget_left, split_at_word, without_tail
from proxy.core.generation import Chunk, Generation, GenerationRequest
from proxy.core.upstream import Readiness
from proxy.errors import (
    GatewayBusy,
    GatewayError,
    UnknownModel,
    UpstreamBusy,
    UpstreamRateLimited,
    UpstreamStarting,
    UpstreamTimeout,
)
from proxy.observe.metrics import RoutingMetrics
from proxy.observe.record import current_record
from proxy.routing.health import Health
from proxy.routing.members import Member, plan, unavailable

logger = logging.getLogger("proxy.router")
T = TypeVar("T")

BACKOFF = 0.1
# Failures that say when the upstream comes back: it is skipped until then.
COMES_BACK = (UpstreamStarting, UpstreamRateLimited, UpstreamBusy)


def fails_over(error: GatewayError) -> bool:
    """Whether another upstream may succeed where this one failed: not when the request
    itself is wrong (our 4xx, the model's refusal of the input), except what only this one
    cannot do: a model it does not serve, or continuing an answer (a Space's chat endpoint)."""
    return not error.request_fault or error.code in ("model_not_served", "cannot_continue")


class Router:
    """Routes each request among ``members`` (see members.py for the order)."""

    name = "routed"
    identity = "routed"

    def __init__(
        self,
        members: list[Member],
        *,
        metrics: RoutingMetrics,
        rounds: int,
        total_timeout: float,
        cooldown: float,
        wake_interval: float,
        failover_first_token_timeout: float | None = None,
    ) -> None:
        self.members = sorted(members, key=lambda m: m.priority)
        # A stream's first token is waited for this long while another upstream could take
        # the request (the adapters' own UPSTREAM_FIRST_TOKEN_TIMEOUT bounds the last one).
        self._failover_first_token = failover_first_token_timeout
        self._metrics = metrics
        self._health = Health(metrics, cooldown=cooldown, wake_interval=wake_interval)
        self._rounds = rounds
        self._total_timeout = total_timeout
        self._served = sorted({model for m in members for model in m.models})
        every = [spec.name for spec in MODELS]
        # The models some upstream serves: each must have one that can serve it now.
        self._models = every if any(not m.models for m in members) else self._served

    def _plan(self, req: GenerationRequest, exclude: frozenset[Member]) -> list[Member]:
        """The members to try for ``req``, in order; raises when none may serve now."""
        model = req.model.name
        now = time.monotonic()
        found = plan(self.members, model, now, exclude)
        for member in found.skipped:
            self._health.publish(member, now)
            if member.cold:
                self._health.wake(member, now)
        if found.candidates:
            return found.candidates
        # Nothing may serve now; those cooling after a moment's failure are tried anyway.
        last_resort = sorted(
            (m for m in found.skipped if m.worth_a_try and m.state(now, model) == "cooling"),
            key=lambda m: m.cool_until,
        )
        if last_resort:
            return last_resort
        if found.skipped:
            raise unavailable(found.skipped, model, now)
        if not exclude:
            raise UnknownModel(
                f"model {model!r} is not served by any upstream; "
                f"the upstreams serve: {', '.join(self._served) or 'every model'}",
                code="model_not_served",
                param="model",
            )
        return []

    # -- attempts ----------------------------------------------------------------------

    def _note(self, member: Member, outcome: str, started: float) -> None:
        record = current_record()
        if record is None:
            return
        if record.attempts is None:
            record.attempts = []
        record.attempts.append((member.name, outcome, time.perf_counter() - started))
        if outcome == "ok":
            if record.upstreams is None:
                record.upstreams = []
            record.upstreams.append(member.name)

    def _again(self, failures: list[GatewayError], round_: int) -> bool:
        """Whether another round may cure this one's failures: some failed before output in
        a way another try may cure (a reset, a refused connection), not by silence."""
        return round_ + 1 < self._rounds and any(e.retry_before_output for e in failures)

    async def _pause(self, round_: int, deadline: float) -> bool:
        """Back off before another round over the upstreams; False when no time is left."""
        pause = BACKOFF * 2**round_ + random.uniform(0, BACKOFF)
        if time.monotonic() + pause >= deadline:
            return False
        await asyncio.sleep(pause)
        return True

    async def generate(self, req: GenerationRequest) -> Generation:
        """The whole reply from the first upstream that gives one; failures before it go to
        the next, within UPSTREAM_TIMEOUT and UPSTREAM_RETRIES more rounds."""
        deadline = time.monotonic() + self._total_timeout
        member, generation = await self._first_served(
            req, set(), deadline, lambda member: member.upstream.generate(req)
        )
        member.in_flight -= 1
        return replace(generation, upstream=member.name)

    async def _first_served(
        self,
        req: GenerationRequest,
        exclude: set[Member],
        deadline: float,
        attempt: Callable[[Member], Awaitable[T]],
        *,
        continuing: bool = False,
        first_token: bool = False,
    ) -> tuple[Member, T]:
        """The first member (not in ``exclude``; one that can continue an answer when
        ``continuing``) whose ``attempt`` succeeds, and what it gave. Failures before output
        go to the next member, within ``deadline`` and the rounds; with ``first_token`` (the
        attempt ends at a stream's first token), a member is given only
        FAILOVER_FIRST_TOKEN_TIMEOUT while another could take the request. The member's call
        stays counted in flight for the caller to release."""
        failures: list[GatewayError] = []
        for round_ in range(self._rounds):
            members = self._plan(req, frozenset(exclude))
            if continuing:
                members = [m for m in members if m.can_continue]
            for index, member in enumerate(members):
                if time.monotonic() >= deadline:
                    break
                started = time.perf_counter()
                self._metrics.calls.labels(member.name).inc()
                member.in_flight += 1
                probe = member.on_probation  # its wait is over: this call is its probe
                if probe:
                    member.probing = True
                bound = None
                if first_token and self._failover_first_token is not None:
                    if any(not m.upstream.in_use for m in members[index + 1 :]):
                        bound = self._failover_first_token
                try:
                    result = await _within(
                        attempt(member), bound, deadline - time.monotonic(), member.name
                    )
                except GatewayError as exc:
                    member.probing = False
                    member.in_flight -= 1
                    self._note(member, exc.code, started)
                    if not fails_over(exc):
                        raise
                    self._health.failed(member, exc)
                    self._metrics.failovers.labels(member.name).inc()
                    failures.append(exc)
                    continue
                except BaseException:
                    member.probing = False
                    member.in_flight -= 1
                    raise
                member.probing = False
                self._note(member, "ok", started)
                self._health.succeeded(member)
                return member, result
            if not self._again(failures, round_) or not await self._pause(round_, deadline):
                break
        raise self._answer(req, failures)

    def _answer(self, req: GenerationRequest, failures: list[GatewayError]) -> GatewayError:
        """The error for a request no upstream served. When each failure says when to come
        back (asleep, out of quota, a full queue), the answer is the one for every upstream
        skipped: 503 upstream_starting or 429, with the smallest Retry-After among all of
        them; else the failure that says to come back soonest, or the last."""
        if failures and all(isinstance(e, COMES_BACK) for e in failures):
            now = time.monotonic()
            found = plan(self.members, req.model.name, now, frozenset())
            if not found.candidates and found.skipped:
                return unavailable(found.skipped, req.model.name, now)
        if not failures:
            return GatewayBusy("no upstream could take the request in time; retry shortly")
        waiting = [e for e in failures if e.retry_after is not None]
        return min(waiting, key=lambda e: e.retry_after or 0) if waiting else failures[-1]

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """The reply's chunks; when a stream breaks after output, the rest from another
        upstream that can continue it, as one answer. With nowhere to continue, the
        failure is raised (an ``error`` event; never a ``done`` after a truncated text)."""
        deadline = time.monotonic() + self._total_timeout
        tried: set[Member] = set()
        member, (chunks, first) = await self._first_served(
            req, tried, deadline, partial(_opened, req=req), first_token=True
        )
        text = ""  # what the client has
        prefix = tail = ""
        continued = False
        while True:
            tried.add(member)
            source = _with_first(chunks, first)
            if continued:
                source = without_tail(source, prefix, tail)
            try:
                async for chunk in source:
                    text = chunk.text if chunk.replace else text + chunk.text
                    yield chunk
                return
            except GatewayError as exc:
                if not fails_over(exc):
                    raise
                self._health.failed(member, exc)
                broke = exc
            finally:
                member.in_flight -= 1
                await source.aclose()
            prefix, tail = split_at_word(text)
            budget = budget_left(req.max_new_tokens, prefix)
            if budget < 1:  # the budget is spent: the answer is as long as it may be
                yield Chunk("", finish_reason="length")
                return
            rest = replace(req, prefill=prefix, max_new_tokens=budget)
            try:
                member, (chunks, first) = await self._first_served(
                    rest, tried, deadline, partial(_opened, req=rest),
                    continuing=True, first_token=True,
                )  # fmt: skip
            except GatewayError:
                if not req.rewritable:
                    raise _unfinished(broke, text) from None
                # Nowhere to continue it: start it again on another upstream; the text the
                # client has is skipped when the new answer repeats it, else replaced.
                try:
                    member, (chunks, first) = await self._first_served(
                        req, tried, deadline, partial(_opened, req=req), first_token=True
                    )
                except GatewayError:
                    raise _unfinished(broke, text) from None
                self._metrics.restarts.labels(member.name).inc()
                logger.info("stream restarted on %s after %d characters", member.name, len(text))
                prefix, tail = "", text
            else:
                self._metrics.continuations.labels(member.name).inc()
                logger.info("stream continued by %s after %d characters", member.name, len(text))
            continued = True

    # -- lifecycle ---------------------------------------------------------------------

    def states(self) -> dict[str, str]:
        now = time.monotonic()
        return {m.name: m.state(now) for m in self.members}

    async def ready(self) -> Readiness:
        """Ready when every model has an upstream that can serve it now."""
        now = time.monotonic()
        states = self.states()
        for member in self.members:
            self._health.publish(member, now)
        missing = [
            model
            for model in self._models
            if not any(states[m.name] == "ready" for m in self.members if m.serves(model))
        ]
        detail = ", ".join(f"{name} {state}" for name, state in states.items())
        if not missing:
            return Readiness(True, f"upstreams: {detail}", upstreams=states)
        return Readiness(
            False,
            f"no upstream can serve {', '.join(missing)} now ({detail})",
            upstreams=states,
        )

    async def probe(self) -> Readiness:
        return await self.ready()

    async def start(self) -> None:
        await asyncio.gather(*(m.upstream.start() for m in self.members))
        for member, readiness in zip(
            self.members,
            await asyncio.gather(*(m.upstream.ready() for m in self.members)),
            strict=True,
        ):
            if not readiness.ready and readiness.error is not None:
                if readiness.error.cold_start_symptom:
                    member.cold = True
                    member.skip_error = readiness.error
                    member.woken_at = time.monotonic()
            self._health.publish(member, time.monotonic())

    async def aclose(self) -> None:
        await self._health.aclose()
        await asyncio.gather(*(m.upstream.aclose() for m in self.members))


def _unfinished(broke: GatewayError, text: str) -> GatewayError:
    return type(broke)(
        f"{broke.message}; the answer broke off after {len(text)} characters and "
        "no other upstream could continue it",
        code=broke.code,
    )


async def _within(work: Awaitable[T], first_token: float | None, left: float, name: str) -> T:
    """``work``'s result within the request's ``left`` seconds (and ``first_token``'s, when
    set), or UpstreamTimeout saying which bound it hit: a failover never outlasts
    UPSTREAM_TIMEOUT."""
    seconds = left if first_token is None else min(first_token, left)
    try:
        async with asyncio.timeout(max(seconds, 0.001)):
            return await work
    except TimeoutError:
        if first_token is not None and first_token <= left:
            raise UpstreamTimeout(
                f"no first token from {name} within {first_token:g} s while another upstream "
                "could answer (FAILOVER_FIRST_TOKEN_TIMEOUT)"
            ) from None
        raise UpstreamTimeout(
            f"no answer within UPSTREAM_TIMEOUT: {name} was the last upstream tried"
        ) from None


async def _opened(
    member: Member, req: GenerationRequest
) -> tuple[AsyncGenerator[Chunk, None], Chunk | None]:
    """``member``'s stream for ``req`` and its first chunk (None: an empty complete stream);
    a failure before it is raised, the stream closed."""
    chunks = member.upstream.stream(req)
    try:
        return chunks, await anext(chunks)
    except StopAsyncIteration:
        return chunks, None
    except BaseException:
        await chunks.aclose()
        raise


async def _with_first(
    chunks: AsyncGenerator[Chunk, None], first: Chunk | None
) -> AsyncGenerator[Chunk, None]:
    try:
        if first is not None:
            yield first
            async for chunk in chunks:
                yield chunk
    finally:
        await chunks.aclose()
