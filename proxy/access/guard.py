"""Who may generate: the origin check, the callers CALLERS accepts (anyone, browsers by
origin, API keys, signed user tokens), the throttle on failed credentials and the per-client
rate limits (counted by ``rate_limits.RateLimits``), in front of the generation routes
(``Guard.enter``, which their hot routes call): admitted requests get ``RateLimit-*`` headers on
their response; refused ones get a JSON error with the same headers."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from msgspec import Struct
from starlette.types import Scope

from proxy.access.auth_failures import AuthFailures
from proxy.access.clients import ClientAddresses
from proxy.access.origins import origin_matcher
from proxy.access.rate_limits import RateLimits
from proxy.config.settings import Settings
from proxy.errors import Forbidden, GatewayError, InvalidRequest, Unauthorized
from proxy.observe.record import RequestRecord

if TYPE_CHECKING:  # PyJWT is imported only when user tokens are configured
    from proxy.access.user_tokens import UserTokens
    from proxy.observe.tracing import Tracing

_WANTED = (b"origin", b"authorization", b"x-forwarded-for")


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and credential.startswith("eyJ")


class Caller(Struct, frozen=True):
    """Who an admitted request comes from: ``identity`` counts its rate limit and scopes its
    cache entries (``key:…``, ``user:…`` or ``ip:…``); ``trusted`` when it proved itself with
    a credential."""

    identity: str
    trusted: bool

    @property
    def kind(self) -> str:
        """key, user or ip: how it was told apart (never the credential or the address)."""
        return self.identity.partition(":")[0]


class Guard:
    """Decides who may generate, by CALLERS: ``anyone``; ``browser`` (an allowed Origin, which
    only browsers cannot forge); ``key`` (one of API_KEYS); ``token`` (a valid user token).
    A disallowed Origin is refused whatever else the request carries."""

    def __init__(
        self,
        settings: Settings,
        limits: RateLimits | None = None,
        *,
        failures: AuthFailures | None = None,
        users: UserTokens | None = None,
    ) -> None:
        self.origins = origin_matcher(settings.allowed_origins)
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self.clients = ClientAddresses(settings.trusted_proxies)
        self.limits = limits
        self.callers = settings.accepted_callers
        self.failures = failures or AuthFailures(settings.auth_failures)
        self.users = users

    def allowed_origin(self, origin: str) -> bool:
        return self.origins is None or self.origins.fullmatch(origin) is not None

    def address(self, scope: Scope, forwarded: str | None = None) -> str:
        """The client's address, as TRUSTED_PROXIES lets the gateway believe it."""
        return self.clients.of(scope, forwarded)

    def _missing(self) -> Unauthorized:
        if "key" in self.callers and "token" in self.callers:
            what, code = "an API key or a user token", "missing_credential"
        elif "token" in self.callers:
            what, code = "a user token (the signed-in user's access token)", "missing_token"
        else:
            what, code = "an API key", "missing_api_key"
        return Unauthorized(
            f"this gateway needs {what}: send Authorization: Bearer <credential>",
            code=code,
            headers=BEARER_CHALLENGE,
        )

    async def _identify(self, credential: str) -> str:
        """The identity a credential proves; raises Unauthorized for a wrong one."""
        if "token" in self.callers and self.users is not None and looks_like_jwt(credential):
            return await self.users.user_of(credential)
        if "key" in self.callers:
            token = credential.encode()
            matched = False
            for key in self.keys:  # every key compared, in constant time each
                matched |= hmac.compare_digest(token, key)
            if matched:
                return "key:" + hashlib.sha256(token).hexdigest()[:16]
            raise Unauthorized(
                "the API key is not valid", code="invalid_api_key", headers=BEARER_CHALLENGE
            )
        if "token" in self.callers:
            raise Unauthorized(
                "the credential is not a user token (a JWT)",
                code="invalid_token",
                headers=BEARER_CHALLENGE,
            )
        # Nothing is asked of callers: a credential is not checked, and proves nothing.
        raise _Ignored

    async def admit(self, scope: Scope) -> tuple[Caller, list[tuple[bytes, bytes]]]:
        """The caller and the headers for the response of an admitted request; raises
        GatewayError otherwise."""
        wanted = [(k, v) for k, v in scope["headers"] if k in _WANTED]
        found: dict[bytes, str] = {}
        for key, value in wanted:
            text = value.decode("latin-1")
            if key not in found:
                found[key] = text
            elif key == b"x-forwarded-for":  # several are one list, in order (RFC 9110)
                found[key] += ", " + text
            else:  # two Origins or credentials: CORS would read one, the guard another
                raise InvalidRequest(
                    f"send one {key.decode().title()} header, not several",
                    code="duplicate_header",
                )
        origin = found.get(b"origin")
        if origin is not None and not self.allowed_origin(origin):
            raise Forbidden(
                f"the origin {origin[:100]} is not allowed; the gateway's operator can add it "
                "to ALLOWED_ORIGINS"
            )
        address = self.address(scope, found.get(b"x-forwarded-for"))
        caller = Caller("ip:" + address, trusted=False)
        authorization = found.get(b"authorization")
        credential = None
        if authorization and authorization[:7].lower() == "bearer ":
            credential = authorization[7:].strip()
        if credential and self.callers - {"anyone", "browser"}:
            try:
                caller = Caller(await self._identify(credential), trusted=True)
            except Unauthorized:
                # Only failures are throttled: a good credential is let in whatever the
                # address did before (behind a shared router, another client's guesses must
                # not lock it out). A signed token cannot be guessed, so is never counted.
                if not (self.users is not None and looks_like_jwt(credential)):
                    await self.failures.refused(address)
                raise
            except _Ignored:
                pass
        elif not ("anyone" in self.callers or ("browser" in self.callers and origin)):
            raise self._missing()
        if self.limits is None:
            return caller, []
        return caller, await self.limits.hit(caller.identity)

    async def enter(self, scope: Scope, record: RequestRecord, tracing: Tracing | None) -> None:
        """Admits a request (in a span of its own, with tracing): its caller goes into the
        scope's state and the record, its ``RateLimit-*`` headers into the record, for its
        response; raises GatewayError for a refused one."""
        span = tracing.start("guard") if tracing is not None else None
        try:
            caller, extra = await self.admit(scope)
        except GatewayError as exc:
            if span is not None:
                span.set_attribute("error.type", exc.code)
                span.end()
            raise
        if span is not None:
            span.set_attribute("proxy.caller", caller.kind)
            span.end()
        scope["state"]["caller"] = caller
        record.caller = caller.kind
        record.headers = extra or None


class _Ignored(Exception):
    """A credential sent to a gateway that asks for none."""


BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="proxy"'}
