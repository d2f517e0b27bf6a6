"""Who is the client: the socket peer, or what a trusted reverse proxy says it saw.

A reverse proxy appends the address it received a request from to
`X-Forwarded-For`, so the list reads left (first hop) to right (last hop). Only
entries added by proxies we trust can be believed: walking from the right,
every trusted address is a hop of ours, and the first untrusted one is the
client. Anything further left was written by that client and is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from proxy.config import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_HOPS = 32  # a longer chain is not read past this many entries from the right


def parse_address(text: str) -> Address | None:
    """An address as it may appear in X-Forwarded-For or as a peer: "1.2.3.4",
    "1.2.3.4:5678", "2001:db8::1", "[2001:db8::1]:443"; None if it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def forwarded_for(headers: Mapping[str, str]) -> list[str]:
    """Every X-Forwarded-For entry, left to right, over all such header lines."""
    get_all = getattr(headers, "get_all", None)
    lines: Iterable[str] = (get_all("X-Forwarded-For") or []) if get_all else \
        [v for v in [headers.get("X-Forwarded-For")] if v is not None]
    return [item for line in lines for item in str(line).split(",")]


def client_address(peer: str, headers: Mapping[str, str], proxies: Sequence[Network]) -> str:
    """The client's address as text: the peer, unless the peer is a trusted proxy."""
    address = parse_address(peer)
    if address is None:
        return peer or "unknown"
    if not proxies or not trusted(address, proxies):
        return str(address)
    chain = forwarded_for(headers)[-MAX_HOPS:]
    for entry in reversed(chain):
        hop = parse_address(entry)
        if hop is None:
            # Not an address (garbage or "unknown"): nothing left of it can be believed,
            # and the hop that wrote it is the last we know of.
            return str(address)
        if not trusted(hop, proxies):
            return str(hop)
        address = hop
    return str(address)  # every hop is trusted: the left-most one is as far as we can see


def throttle_key(client: str) -> str:
    """The key bad tokens are counted under: the address, or for IPv6 its /64 (one host
    usually holds a whole /64, so counting single addresses would be no limit at all)."""
    address = parse_address(client)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return client
