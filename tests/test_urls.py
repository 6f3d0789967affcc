"""``client.protocol.urls``: the URLs servers publish, as clients reach them."""

import pytest

from client.protocol.urls import URLError, check_private_transport, is_loopback, split_url


@pytest.mark.parametrize("url, parts", [
    ("http://ks.example/v1/x?start=1", ("http", "ks.example", 80, "/v1/x?start=1")),
    ("HTTPS://ks.example", ("https", "ks.example", 443, "/")),
    ("http://ks.example:8080?q=1#frag", ("http", "ks.example", 8080, "/?q=1")),
    ("http://[::1]:9000/a", ("http", "::1", 9000, "/a")),
    ("http://[::1]/a", ("http", "::1", 80, "/a")),
    # The first "://" and the first "/" or "?" end the scheme and the host, whatever
    # the query holds: a repository URI carrying another URL.
    ("https://ks.example/a?next=http://b.example/", ("https", "ks.example", 443,
                                                      "/a?next=http://b.example/")),
    ("https://ks.example?a?b", ("https", "ks.example", 443, "/?a?b")),
])
def test_split_url(url, parts):
    assert split_url(url) == parts


@pytest.mark.parametrize("url", ["ftp://ks.example/", "ks.example/v1", "http://u:p@ks.example/",
                                 "http://ks.example:80a/", "http:///path", "http://:80/",
                                 "http://[::1]]:80/"])
def test_split_url_refuses(url):
    with pytest.raises(URLError):
        split_url(url)


def test_user_information_is_refused_with_or_without_a_password():
    """A sender's client must not be pointed at ``user@host`` (what host is meant?)."""
    for url in ("http://u:p@ks.example/", "https://user@ks.example/"):
        with pytest.raises(URLError, match="user information in URLs is not supported"):
            split_url(url)


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("LocalHost", True), ("127.0.0.1", True), ("127.255.0.9", True),
    ("::1", True), ("128.0.0.1", False), ("10.0.0.1", False), ("::2", False),
    ("127.1", False),                   # another spelling: taken as remote, the safe side
    ("localhost.example", False), ("keys.example.org", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("url", ["https://keys.example.org", "http://127.0.0.1:5000/",
                                 "http://[::1]:8080", "http://localhost"])
def test_private_transport_allowed(url):
    check_private_transport(url)


@pytest.mark.parametrize("url", ["http://keys.example.org", "http://10.0.0.1",
                                 "ftp://keys.example.org", "keys.example.org"])
def test_private_transport_refused(url):
    with pytest.raises(URLError):
        check_private_transport(url)
