"""The URLs a keyserver publishes (its base URL, KeyInit repository URIs, §9, §12)
as the client reaches them: http or https, a host, an optional port, a target.

The server checks its configured URLs with the same function, so that it never
publishes one its clients cannot use.
"""

from __future__ import annotations

import ipaddress

DEFAULT_PORTS = {"http": 80, "https": 443}


class URLError(ValueError):
    """Not an http or https URL this protocol can use."""


def split_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, target)`` of an http or https URL."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise URLError(f"the URL must start with http:// or https:// (not {url!r})")
    if scheme not in DEFAULT_PORTS:
        raise URLError(f"unsupported URL scheme {scheme!r} in {url!r}: the URL must start "
                       "with http:// or https://")
    rest = rest.partition("#")[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, target = rest[:cut], rest[cut:]
    if target.startswith("?"):
        target = "/" + target
    if "@" in netloc:
        raise URLError(f"user information in URLs is not supported: {url!r}")
    if netloc.startswith("["):                       # [IPv6]:port
        host, _, port = netloc[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    if not host or (port and not (port.isascii() and port.isdigit())):
        raise URLError(f"bad host or port in {url!r}")
    return scheme, host, int(port) if port else DEFAULT_PORTS[scheme], target or "/"


def is_loopback(host: str) -> bool:
    """``localhost``, or an address in 127.0.0.0/8 or ``::1`` written the standard way
    (other spellings, such as ``127.1``, count as remote: the safe side)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_private_transport(url: str) -> None:
    """Refuse (``URLError``) a URL a client must not send its requests to in the clear:
    anything but https, except http to a loopback host (a test or a local proxy)."""
    scheme, host, _, _ = split_url(url)
    if scheme != "https" and not is_loopback(host):
        raise URLError(f"{url!r} is neither https nor http to a loopback address")
