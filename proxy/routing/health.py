"""What the router knows of its upstreams' health, and the calls in the background that keep
it current: a wake-up call to a cold one at most every UPSTREAM_WAKE_INTERVAL, and a probe of a
failed one as soon as its wait is over, then every UPSTREAM_COOLDOWN while it stays down."""

from __future__ import annotations

import asyncio
import logging
import time

from proxy.errors import GatewayBusy, GatewayError
from proxy.observe.metrics import RoutingMetrics
from proxy.routing.members import Member, recovered, settle

logger = logging.getLogger("proxy.router")


class Health:
    """The members' states as their calls and probes find them, published as metrics."""

    def __init__(self, metrics: RoutingMetrics, *, cooldown: float, wake_interval: float) -> None:
        self._metrics = metrics
        self._cooldown = cooldown
        self._wake_interval = wake_interval
        self._wakes: set[asyncio.Task[None]] = set()
        self._probers: dict[str, asyncio.Task[None]] = {}

    def publish(self, member: Member, now: float) -> None:
        state = member.state(now)
        if state != member.published:
            member.published = state
            self._metrics.set_state(member.name, state)

    def failed(self, member: Member, error: GatewayError) -> None:
        self._metrics.failures.labels(member.name, error.code).inc()
        if isinstance(error, GatewayBusy):  # its own bound: no verdict on the upstream
            return
        now = time.monotonic()
        settle(member, error, now, self._cooldown)
        self.publish(member, now)
        if member.on_probation:
            self._probe_when_due(member)

    def _probe_when_due(self, member: Member) -> None:
        """Probe a failed upstream in the background as soon as its wait is over, and again
        every UPSTREAM_COOLDOWN while it stays down: it comes back within that of its recovery,
        whether or not a request is routed to it."""
        running = self._probers.get(member.name)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._probe_later(member))
        self._probers[member.name] = task
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    async def _probe_later(self, member: Member) -> None:
        while member.on_probation:
            await asyncio.sleep(max(0.0, member.cool_until - time.monotonic()))
            if not member.on_probation:
                return  # a request found it back first
            if member.probing or time.monotonic() < member.cool_until:
                await asyncio.sleep(min(self._cooldown, 1.0))
                continue  # a request is probing it now, or it failed again meanwhile
            member.probing = True
            try:
                readiness = await member.upstream.probe()
            except Exception:  # a probe must never take the router down
                logger.exception("probing upstream %s failed", member.name)
                readiness = None
            finally:
                member.probing = False
            if readiness is not None and readiness.ready:
                logger.info("upstream %s answers again", member.name)
                self.succeeded(member)
                return
            member.cool_until = time.monotonic() + self._cooldown
            self.publish(member, time.monotonic())

    def succeeded(self, member: Member) -> None:
        if member.cold or member.skip_error is not None:
            recovered(member)
        self.publish(member, time.monotonic())

    def wake(self, member: Member, now: float) -> None:
        """Ask a skipped cold upstream whether it is up, at most once per interval, in the
        background: the call also wakes a sleeping Space."""
        if now - member.woken_at < self._wake_interval:
            return
        member.woken_at = now
        task = asyncio.create_task(self._check(member))
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    async def _check(self, member: Member) -> None:
        try:
            readiness = await member.upstream.probe()
        except Exception:  # a wake-up call must never take the router down
            logger.exception("waking upstream %s failed", member.name)
            return
        if readiness.ready:
            logger.info("upstream %s is up again", member.name)
            self.succeeded(member)
        elif readiness.error is not None and not readiness.error.cold_start_symptom:
            member.skip_error = readiness.error

    async def aclose(self) -> None:
        for task in list(self._wakes):
            task.cancel()
        await asyncio.gather(*self._wakes, return_exceptions=True)
