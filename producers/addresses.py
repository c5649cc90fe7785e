"""Which network addresses the crawler may connect to: deny by default.

Only globally routable unicast addresses are allowed, after the IANA IPv4 and IPv6
special-purpose address registries. ``ipaddress.is_global`` alone is not enough
(Python 3.11 passes 6to4, site-local ``fec0::/10`` and NAT64), so addresses that
carry an IPv4 address inside them (IPv4-mapped, 6to4, Teredo, NAT64) are judged
by that IPv4 address too, and every refusal says which range it fell in.
"""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Address = IPv4Address | IPv6Address

# Ranges the crawler never connects to, with the reason a person reads. Anycast service
# blocks IANA lists as globally reachable (192.0.0.9/32, AS112...) are refused as well:
# nobody's writing lives there, and deny-by-default errs towards refusing.
_REFUSED_IPV4 = tuple(
    (IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
        ("10.0.0.0/8", "private (10.0.0.0/8)"),
        ("100.64.0.0/10", "shared address space (100.64.0.0/10: carrier NAT, cloud metadata)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16: cloud metadata)"),
        ("172.16.0.0/12", "private (172.16.0.0/12)"),
        ("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
        ("192.0.2.0/24", "documentation (192.0.2.0/24)"),
        ("192.31.196.0/24", "AS112 service (192.31.196.0/24)"),
        ("192.52.193.0/24", "AMT relays (192.52.193.0/24)"),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast (192.88.99.0/24)"),
        ("192.168.0.0/16", "private (192.168.0.0/16)"),
        ("192.175.48.0/24", "AS112 service (192.175.48.0/24)"),
        ("198.18.0.0/15", "benchmarking (198.18.0.0/15)"),
        ("198.51.100.0/24", "documentation (198.51.100.0/24)"),
        ("203.0.113.0/24", "documentation (203.0.113.0/24)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("255.255.255.255/32", "limited broadcast (255.255.255.255)"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    )
)
_REFUSED_IPV6 = tuple(
    (IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "unspecified (::)"),
        ("::1/128", "loopback (::1)"),
        ("64:ff9b:1::/48", "local-use NAT64 (64:ff9b:1::/48)"),
        ("100::/64", "discard-only (100::/64)"),
        ("2001:db8::/32", "documentation (2001:db8::/32)"),
        ("2001::/23", "IETF protocol assignments (2001::/23)"),
        ("3fff::/20", "documentation (3fff::/20)"),
        ("5f00::/16", "segment routing (5f00::/16)"),
        ("fc00::/7", "unique local (fc00::/7)"),
        ("fe80::/10", "link-local (fe80::/10)"),
        ("fec0::/10", "site-local (fec0::/10)"),
        ("ff00::/8", "multicast (ff00::/8)"),
    )
)
# IPv6 global unicast is allocated from 2000::/3 only; anything outside it is not the web.
_GLOBAL_UNICAST_IPV6 = IPv6Network("2000::/3")
_NAT64 = IPv6Network("64:ff9b::/96")
_TEREDO = IPv6Network("2001::/32")


def refusal(address: str | Address) -> str | None:
    """Why the crawler may not connect to ``address``, or None when it may."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0] if isinstance(address, str) else address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, IPv4Address):
        return _ipv4_refusal(ip)
    return _ipv6_refusal(ip)


def is_allowed(address: str | Address) -> bool:
    return refusal(address) is None


def _ipv4_refusal(ip: IPv4Address) -> str | None:
    for network, reason in _REFUSED_IPV4:
        if ip in network:
            return reason
    # Belt and braces: whatever Python's own table knows that ours does not.
    return None if ip.is_global else "not globally routable"


def _ipv6_refusal(ip: IPv6Address) -> str | None:
    inner = _embedded_ipv4(ip)
    if inner is not None:
        kind, addresses = inner
        for embedded in addresses:
            reason = _ipv4_refusal(embedded)
            if reason is not None:
                return f"{kind} address of {embedded}, which is {reason}"
        if kind == "Teredo":
            # A tunnel endpoint, reached through whichever relay answers: never the web.
            return "Teredo tunnel (2001::/32)"
        return None
    for network, reason in _REFUSED_IPV6:
        if ip in network:
            return reason
    if ip not in _GLOBAL_UNICAST_IPV6:
        return "outside IPv6 global unicast (2000::/3)"
    return None if ip.is_global else "not globally routable"


def _embedded_ipv4(ip: IPv6Address) -> tuple[str, list[IPv4Address]] | None:
    """The IPv4 addresses an IPv6 address stands for, and how it carries them."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return "6to4", [ip.sixtofour]
    if ip in _TEREDO and ip.teredo is not None:
        server, client = ip.teredo
        return "Teredo", [server, client]
    if ip in _NAT64:
        return "NAT64", [IPv4Address(int(ip) & 0xFFFFFFFF)]
    return None


class AddressRefused(Exception):
    """A host resolved to an address the crawler may not reach; the message says why."""


def vetted(host: str, resolved: list[str], *, allow_private_networks: bool) -> list[str]:
    """``resolved`` (the addresses ``host`` resolved to, in order, without repeats) if all may be
    reached, else ``AddressRefused``.

    One refused address refuses the name: a name that mixes public and private answers is
    how rebinding starts, and the connection must only ever go to a vetted address.
    """
    addresses = list(dict.fromkeys(resolved))
    if not addresses:
        raise AddressRefused(f"{host} resolves to no address")
    if allow_private_networks:
        return addresses
    refused = [f"{address} ({reason})" for address in addresses if (reason := refusal(address))]
    if refused:
        raise AddressRefused(
            f"{host} resolves to an address the crawler may not reach: {', '.join(refused)}; "
            "pass --allow-private-networks to crawl a site on your own machine or network"
        )
    return addresses


def resolve(host: str, port: int, *, allow_private_networks: bool) -> list[str]:
    """``host``'s addresses from one lookup, all vetted; connect only to these.

    ``AddressRefused`` when the name does not resolve or any address is refused.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        detail = getattr(error, "strerror", None) or error
        raise AddressRefused(f"cannot resolve {host}: {detail}") from None
    resolved = [str(info[4][0]) for info in infos]
    return vetted(host, resolved, allow_private_networks=allow_private_networks)
