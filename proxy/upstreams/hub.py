"""The Hugging Face Hub's view of a Space: its runtime stage (running, sleeping, building...).

Used only to explain an unavailable Space better; answers are kept for a few seconds so a
burst of failing requests asks the Hub once.
"""

from __future__ import annotations

import logging
import time

import aiohttp
import orjson

from proxy.errors import GatewayError, UpstreamStarting, UpstreamUnavailable

logger = logging.getLogger("proxy.hub")

STARTING = {"SLEEPING", "BUILDING", "APP_STARTING", "RUNNING_BUILDING", "RUNNING_APP_STARTING"}
STOPPED = {"PAUSED", "STOPPED", "NO_APP_FILE", "CONFIG_ERROR", "BUILD_ERROR", "RUNTIME_ERROR"}
REMEMBER = 5.0


class SpaceStage:
    def __init__(self, hub_url: str, space_id: str, *, token: str | None) -> None:
        self.url = f"{hub_url.rstrip('/')}/api/spaces/{space_id}/runtime"
        self.space_id = space_id
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None
        self._stage: str | None = None
        self._read_at = -REMEMBER

    async def stage(self) -> str | None:
        """The Space's runtime stage, or None when the Hub cannot say."""
        if time.monotonic() - self._read_at < REMEMBER:
            return self._stage
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=3), cookie_jar=aiohttp.DummyCookieJar()
            )
        stage = None
        try:
            async with self._session.get(self.url, headers=self._headers) as resp:
                if resp.status == 200:
                    data = orjson.loads(await resp.content.read(1 << 16))
                    stage = str(data.get("stage") or "").upper() or None
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            logger.debug("the Hub did not say the stage of %s", self.space_id)
        except (AttributeError, TypeError):
            stage = None
        self._stage, self._read_at = stage, time.monotonic()
        return stage

    async def explain(self, error: GatewayError) -> GatewayError:
        """``error``, or a clearer one when the Hub says the Space is starting or stopped."""
        stage = await self.stage()
        if stage in STARTING:
            return UpstreamStarting(
                f"the Space {self.space_id} is {stage.lower().replace('_', ' ')}; retry shortly",
                retry_after=30,
            )
        if stage in STOPPED:
            return UpstreamUnavailable(
                f"the Space {self.space_id} is {stage.lower().replace('_', ' ')}: its owner "
                "must restart or fix it",
                retry_after=300,
            )
        return error

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
