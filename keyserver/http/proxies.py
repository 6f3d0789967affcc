"""Client addresses behind a reverse proxy.

Per-address limits (KeyInit fetches, §9) need the client's address. Behind a
reverse proxy the TCP peer is the proxy, and the client's address is in
``X-Forwarded-For``; but any client can send that header, so it is believed only
when the peer is one of ``TRUSTED_PROXIES`` (addresses or networks). The entries
are read from the right (each proxy appends the address it saw) and the first one
that is not itself a trusted proxy is the client; with no trusted proxy (the
default), or a peer that is not one, the peer's address is used as it is.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> list[Network]:
    """``TRUSTED_PROXIES``' entries as networks (an address is a network of one);
    ValueError for one that is neither."""
    return [ipaddress.ip_network(value.strip(), strict=False) for value in values]


def _address(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: str | None, trusted: list[Network]) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy that says whom it
    forwards for (the rightmost entry of ``forwarded_for`` that is not a trusted
    proxy; a malformed entry stops the walk and the last trusted hop is used)."""

    def is_trusted(address) -> bool:
        return address is not None and any(address in network for network in trusted)

    if not trusted or not forwarded_for or not is_trusted(_address(peer)):
        return peer
    client = peer
    for entry in reversed(forwarded_for.split(",")):
        address = _address(entry)
        if address is None:
            break
        client = str(address)
        if not is_trusted(address):
            break
    return client


class TrustedProxies:
    """WSGI middleware: ``REMOTE_ADDR`` becomes the client's address (``client_address``)
    when the peer is a trusted proxy; the peer's own is kept in ``keyserver.peer_addr``."""

    def __init__(self, wsgi_app: Callable, trusted: list[Network]):
        self.wsgi_app = wsgi_app
        self.trusted = trusted

    def __call__(self, environ: dict[str, Any], start_response: Callable):
        peer = environ.get("REMOTE_ADDR", "")
        environ["keyserver.peer_addr"] = peer
        environ["REMOTE_ADDR"] = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"),
                                                self.trusted)
        return self.wsgi_app(environ, start_response)
