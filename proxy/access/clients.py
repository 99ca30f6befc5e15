"""Who a request comes from: the peer address, or the client a trusted proxy reports."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from starlette.types import Scope

KNOWN_MAX = 4096
KNOWN_HEADER_MAX = 256


class ClientAddresses:
    """``X-Forwarded-For`` is believed only when the peer is a trusted proxy (TRUSTED_PROXIES).

    The client is then the right-most address in the header that is not itself a trusted
    proxy: entries to its left were written by the client and can be anything. ``*`` trusts
    whatever peer connects (a platform router whose address is unknown) for one hop only. A
    hop that does not parse as an address is no identity (the peer is used instead), and an
    IPv6 client is its /64, the block one subscriber gets, so rotating addresses within it
    gives no fresh budget.
    """

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self.any_peer = "*" in trusted
        self.networks = [ip_network(item, strict=False) for item in trusted if item != "*"]
        # What (peer, X-Forwarded-For) came to: parsing addresses is most of the work, and a
        # client sends the same pair on every request. Emptied when full.
        self._known: dict[tuple[str, str | None], str] = {}

    def _trusted(self, address: str) -> bool:
        try:
            ip: IPv4Address | IPv6Address = ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def of(self, scope: Scope, forwarded_for: str | None) -> str:
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if forwarded_for is not None and len(forwarded_for) > KNOWN_HEADER_MAX:
            return self._of(peer, forwarded_for)  # not worth the memory
        pair = (peer, forwarded_for)
        known = self._known.get(pair)
        if known is None:
            if len(self._known) >= KNOWN_MAX:
                self._known.clear()
            known = self._known[pair] = self._of(peer, forwarded_for)
        return known

    def _of(self, peer: str, forwarded_for: str | None) -> str:
        if forwarded_for is None or not (self.any_peer or self._trusted(peer)):
            return keyed(peer)
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if self.any_peer:
            return keyed(hops[-1], peer) if hops else keyed(peer)
        for hop in reversed(hops):
            if not self._trusted(hop):
                return keyed(hop, peer)
        return keyed(hops[0], peer) if hops else keyed(peer)


def keyed(address: str, fallback: str | None = None) -> str:
    """The identity of ``address``: itself (IPv4, or an IPv4 mapped into IPv6), its /64
    (IPv6), or, when it is no address at all, ``fallback`` (the peer) keyed the same way."""
    try:
        ip: IPv4Address | IPv6Address = ip_address(address)
    except ValueError:
        if fallback is None:
            return address[:64]  # the server's own peer label ("unknown", a socket path)
        return keyed(fallback)
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip_network(f"{ip}/64", strict=False))
    return str(ip)
