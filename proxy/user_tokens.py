"""Signed user tokens: a front end whose users log in (Supabase, Auth0, Firebase, Clerk, any
OIDC provider) sends the user's access token, and the gateway verifies it with PyJWT against a
shared secret (JWT_SECRET) or the provider's published keys (JWT_JWKS_URL), checking the
algorithm, signature, expiry, issuer and audience. The caller is then the user (``sub``), for
rate limits and the cache scope.

The JWKS is fetched when a token names a key id not seen yet (a key rotation), at most once per
JWT_JWKS_REFRESH seconds, so tokens with made-up key ids cannot make the gateway hammer the
provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.request
from typing import Any

import jwt

from proxy.errors import AuthUnavailable, Unauthorized

LEEWAY = 30  # seconds of clock skew forgiven on exp, nbf and iat
JWKS_TIMEOUT = 5.0
JWKS_MAX_BYTES = 1 << 20
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="proxy", error="invalid_token"'}


def invalid(message: str, code: str = "invalid_token") -> Unauthorized:
    return Unauthorized(message, code=code, headers=CHALLENGE)


class JWKS:
    """The provider's signing keys by key id, fetched on demand and at most every ``refresh``
    seconds."""

    def __init__(self, url: str, *, refresh: float) -> None:
        self.url = url
        self.refresh = refresh
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = -refresh
        self.lock = asyncio.Lock()

    def _download(self) -> dict[str, Any]:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=JWKS_TIMEOUT) as response:
            data = json.loads(response.read(JWKS_MAX_BYTES))
        if not isinstance(data, dict):
            raise ValueError("the JWKS is not a JSON object")
        return data

    async def key(self, kid: str | None) -> jwt.PyJWK:
        if kid is not None and kid in self.keys:
            return self.keys[kid]
        async with self.lock:
            if kid is not None and kid in self.keys:  # fetched while this one waited
                return self.keys[kid]
            if time.monotonic() - self.fetched_at >= self.refresh:
                try:
                    data = await asyncio.to_thread(self._download)
                    found = jwt.PyJWKSet.from_dict(data).keys
                except (OSError, ValueError, jwt.PyJWKSetError) as exc:
                    raise AuthUnavailable(
                        f"user tokens cannot be checked now: the identity provider's keys "
                        f"could not be fetched ({type(exc).__name__}); retry shortly",
                        retry_after=5,
                    ) from None
                self.fetched_at = time.monotonic()
                self.keys = {k.key_id: k for k in found if k.key_id}
                if kid is None and len(found) == 1:
                    return found[0]
        if kid is not None and kid in self.keys:
            return self.keys[kid]
        raise invalid("the user token is signed with a key the identity provider does not list")


class UserTokens:
    """Verifies user tokens; ``user_of`` gives the caller's identity or raises Unauthorized."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None,
        algorithms: tuple[str, ...],
        refresh: float,
    ) -> None:
        self.secret = secret
        self.jwks = JWKS(jwks_url, refresh=refresh) if jwks_url else None
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)

    async def user_of(self, token: str) -> str:
        """``user:<hash of issuer and sub>`` for a valid token."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise invalid("the user token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise invalid(
                f"user tokens signed with {str(algorithm)[:20]!r} are not accepted; "
                f"accepted: {', '.join(self.algorithms)}"
            )
        key: Any = self.secret
        if self.jwks is not None:
            kid = header.get("kid")
            key = (await self.jwks.key(kid if isinstance(kid, str) else None)).key
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise invalid("the user token has expired; sign in again", "token_expired") from None
        except jwt.InvalidAudienceError:
            raise invalid("the user token is meant for another audience") from None
        except jwt.InvalidIssuerError:
            raise invalid("the user token comes from another issuer than JWT_ISSUER") from None
        except jwt.InvalidSignatureError:
            raise invalid("the user token's signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise invalid(f"the user token is not valid ({type(exc).__name__})") from None
        subject = f"{claims.get('iss', '')}|{claims['sub']}"
        return "user:" + hashlib.sha256(subject.encode()).hexdigest()[:16]
