"""What a request body came to, kept for the next identical one.

A front end sends the same bytes for the same question (a suggested question, a retry, a
page reload), and what they parse, validate and render to depends only on those bytes, the
settings, ``Accept`` and whose cache the request uses. So a route keeps, per such key, the
normalised request and its cache key: an identical body skips parsing, validation, prompt
rendering and hashing. Only bodies that were valid are kept; bounded by entries and by body
size, the oldest entry making room for a new one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Plan = TypeVar("Plan")

MAX_ENTRIES = 512
MAX_BODY_BYTES = 2048

PlanKey = tuple[bytes, str, str]


class Plans(Generic[Plan]):
    """A bounded memo of plans by (body, Accept, cache scope)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_body: int = MAX_BODY_BYTES) -> None:
        self._plans: OrderedDict[PlanKey, Plan] = OrderedDict()
        self._max_entries = max_entries
        self._max_body = max_body

    def get(self, key: PlanKey) -> Plan | None:
        return self._plans.get(key)

    def keep(self, key: PlanKey, plan: Plan) -> None:
        if len(key[0]) > self._max_body:
            return
        plans = self._plans
        if len(plans) >= self._max_entries:
            plans.popitem(last=False)
        plans[key] = plan

    def __len__(self) -> int:
        return len(self._plans)
