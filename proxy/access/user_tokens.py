"""Signed user tokens: a front end whose users log in (Supabase, Auth0, Firebase, Clerk, any
OIDC provider) sends the user's access token, and the gateway verifies it with PyJWT against a
shared secret (JWT_SECRET) or the provider's published keys (JWT_JWKS_URL), checking the
algorithm, signature, expiry, issuer and audience. The caller is then the user (``sub``), for
rate limits and the cache scope.

The JWKS is fetched when a token names a key id not seen yet (a key rotation), at most once per
JWT_JWKS_REFRESH seconds whether the fetch works or fails, so tokens with made-up key ids
cannot make the gateway hammer the provider; a download has one deadline, redirects go only to
the JWKS URL's own host, and a token's algorithm must fit its key's type.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import jwt

from proxy.errors import AuthUnavailable, Unauthorized

LEEWAY = 30  # seconds of clock skew forgiven on exp, nbf and iat
JWKS_TIMEOUT = 5.0  # for the whole download, however slowly it drips
JWKS_MAX_BYTES = 1 << 20
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="proxy", error="invalid_token"'}
# The key type each algorithm family needs (RFC 7518): a token's alg must fit its key's type,
# or an RSA public key could be read as an HMAC secret, or an EC verifier fed an RSA key.
KEY_TYPES = {"HS": "oct", "RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def invalid(message: str, code: str = "invalid_token") -> Unauthorized:
    return Unauthorized(message, code=code, headers=CHALLENGE)


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the JWKS URL's own scheme and host."""

    def __init__(self, origin: tuple[str, str]) -> None:
        self.origin = origin

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        target = urllib.parse.urlsplit(newurl)
        if (target.scheme, target.netloc) != self.origin:
            fp.close()
            raise urllib.error.URLError("the JWKS URL redirects to another host")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class JWKS:
    """The provider's signing keys, fetched on demand and at most every ``refresh`` seconds,
    whether the last fetch worked or not; keys without a key id are kept too."""

    def __init__(self, url: str, *, refresh: float) -> None:
        self.url = url
        self.refresh = refresh
        self.keys: dict[str, jwt.PyJWK] = {}
        self.unnamed: list[jwt.PyJWK] = []
        self.fetched_at = -refresh
        self.failure: AuthUnavailable | None = None
        self.lock = asyncio.Lock()
        parts = urllib.parse.urlsplit(url)
        self._opener = urllib.request.build_opener(_SameHostRedirects((parts.scheme, parts.netloc)))

    def _download(self) -> dict[str, Any]:
        """The JWKS, read by one deadline for the whole download (a provider that drips a
        byte at a time is cut there, not held per read), at most JWKS_MAX_BYTES. Each read
        waits at most half of it, so the whole ends within 1.5 times the deadline."""
        deadline = time.monotonic() + JWKS_TIMEOUT
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        body = b""
        try:
            response = self._opener.open(request, timeout=JWKS_TIMEOUT / 2)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the provider's answer, and its connection, open
            raise OSError(f"the JWKS URL answered HTTP {exc.code}") from None
        with response:
            while len(body) <= JWKS_MAX_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the JWKS download took too long")
                piece = response.read1(65536)
                if not piece:
                    break
                body += piece
        data = json.loads(body[:JWKS_MAX_BYTES])
        if not isinstance(data, dict):
            raise ValueError("the JWKS is not a JSON object")
        return data

    def _known(self, kid: str | None) -> list[jwt.PyJWK]:
        if kid is not None:
            return [self.keys[kid]] if kid in self.keys else []
        # No key id: the keys that have none, or the only key there is.
        return self.unnamed or (list(self.keys.values()) if len(self.keys) == 1 else [])

    async def candidates(self, kid: str | None) -> list[jwt.PyJWK]:
        """The keys a token naming ``kid`` (or none) may be signed with; fetches the set
        when none is known and the last fetch is old enough. Raises AuthUnavailable while
        the provider cannot be reached, Unauthorized for a key it does not list."""
        if found := self._known(kid):
            return found
        async with self.lock:
            if found := self._known(kid):  # fetched while this one waited
                return found
            if time.monotonic() - self.fetched_at >= self.refresh:
                self.fetched_at = time.monotonic()  # a failure waits as long as a success
                try:
                    data = await asyncio.to_thread(self._download)
                    found = jwt.PyJWKSet.from_dict(data).keys
                except (OSError, ValueError, TimeoutError, jwt.PyJWKSetError) as exc:
                    self.failure = AuthUnavailable(
                        f"user tokens cannot be checked now: the identity provider's keys "
                        f"could not be fetched ({type(exc).__name__}); retry shortly",
                        retry_after=max(1, round(self.refresh)),
                    )
                    raise self.failure from None
                self.failure = None
                self.keys = {k.key_id: k for k in found if k.key_id}
                self.unnamed = [k for k in found if not k.key_id]
            elif self.failure is not None:
                raise self.failure
        if found := self._known(kid):
            return found
        raise invalid("the user token is signed with a key the identity provider does not list")


def _fits(algorithm: str, key: jwt.PyJWK) -> bool:
    kty = key._jwk_data.get("kty") if isinstance(key._jwk_data, dict) else None
    return KEY_TYPES.get(algorithm[:2]) == kty


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
        max_lifetime: float | None = None,
    ) -> None:
        self.secret = secret
        self.jwks = JWKS(jwks_url, refresh=refresh) if jwks_url else None
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.max_lifetime = max_lifetime

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
        keys: list[Any] = [self.secret]
        if self.jwks is not None:
            kid = header.get("kid")
            found = await self.jwks.candidates(kid if isinstance(kid, str) else None)
            keys = [k.key for k in found if _fits(algorithm, k)]
            if not keys:
                raise invalid(
                    f"the user token says {algorithm}, which its key's type cannot verify"
                )
        failure: Unauthorized | None = None
        for key in keys:  # one key, unless several keys without a key id may have signed it
            try:
                return self._verified(token, key, algorithm)
            except Unauthorized as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _verified(self, token: str, key: Any, algorithm: str) -> str:
        required = ["exp", "sub", "iat"] if self.max_lifetime else ["exp", "sub"]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise invalid("the user token has expired; sign in again", "token_expired") from None
        except jwt.InvalidAudienceError:
            raise invalid("the user token is meant for another audience") from None
        except jwt.InvalidIssuerError:
            raise invalid("the user token comes from another issuer than JWT_ISSUER") from None
        except jwt.InvalidSignatureError:
            raise invalid("the user token's signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:  # a key that cannot verify it
            raise invalid(f"the user token is not valid ({type(exc).__name__})") from None
        if self.max_lifetime is not None:
            lifetime = float(claims["exp"]) - float(claims["iat"])
            if lifetime > self.max_lifetime:
                raise invalid(
                    f"the user token lives {lifetime:.0f} s; the gateway accepts at most "
                    f"{self.max_lifetime:.0f} s (JWT_MAX_LIFETIME)"
                )
        subject = f"{claims.get('iss', '')}|{claims['sub']}"
        return "user:" + hashlib.sha256(subject.encode()).hexdigest()[:16]
