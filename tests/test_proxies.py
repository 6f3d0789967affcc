"""Client addresses behind a reverse proxy (keyserver/http/proxies.py, TRUSTED_PROXIES)."""

import pytest

from keyserver import create_app
from keyserver.config import ConfigError
from keyserver.http.proxies import client_address, parse_networks

LOCAL = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])


@pytest.mark.parametrize("peer, forwarded, trusted, expected", [
    ("127.0.0.1", "198.51.100.1", [], "127.0.0.1"),                  # none trusted: the peer
    ("192.0.2.9", "198.51.100.1", LOCAL, "192.0.2.9"),               # peer not a proxy
    ("127.0.0.1", None, LOCAL, "127.0.0.1"),                         # proxy, no header
    ("127.0.0.1", "198.51.100.1", LOCAL, "198.51.100.1"),
    ("127.0.0.1", "203.0.113.5, 198.51.100.1", LOCAL, "198.51.100.1"),  # forged left part
    ("127.0.0.1", "198.51.100.1, 10.1.2.3", LOCAL, "198.51.100.1"),  # two proxies
    ("127.0.0.1", "garbage, 10.1.2.3", LOCAL, "10.1.2.3"),           # malformed: last hop
    ("127.0.0.1", "garbage", LOCAL, "127.0.0.1"),
    ("::1", "2001:db8::1", LOCAL, "2001:db8::1"),
])
def test_client_address(peer, forwarded, trusted, expected):
    assert client_address(peer, forwarded, trusted) == expected


@pytest.mark.parametrize("value", ["127.0.0.1", [""], ["localhost"], ["10.0.0.0/33"], [1]])
def test_trusted_proxies_must_be_addresses_or_networks(instance, value):
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        create_app({"TESTING": True, "TRUSTED_PROXIES": value}, instance_path=str(instance))


def test_the_request_sees_the_client_address(instance):
    app = create_app({"TESTING": True, "TRUSTED_PROXIES": ["127.0.0.0/8"]},
                     instance_path=str(instance))
    seen = []

    @app.get("/_test/addr")
    def addr():
        from flask import request
        seen.append(request.remote_addr)
        return ""

    client = app.test_client()
    client.get("/_test/addr", environ_base={"REMOTE_ADDR": "127.0.0.1"},
               headers={"X-Forwarded-For": "198.51.100.7"})
    client.get("/_test/addr", environ_base={"REMOTE_ADDR": "192.0.2.1"},
               headers={"X-Forwarded-For": "198.51.100.7"})
    assert seen == ["198.51.100.7", "192.0.2.1"]
