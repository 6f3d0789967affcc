"""``client.protocol.urls``: the URLs servers publish, as clients reach them."""

import pytest

from client.protocol.urls import URLError, split_url


@pytest.mark.parametrize("url, parts", [
    ("http://ks.example/v1/x?start=1", ("http", "ks.example", 80, "/v1/x?start=1")),
    ("HTTPS://ks.example", ("https", "ks.example", 443, "/")),
    ("http://ks.example:8080?q=1#frag", ("http", "ks.example", 8080, "/?q=1")),
    ("http://[::1]:9000/a", ("http", "::1", 9000, "/a")),
    ("http://[::1]/a", ("http", "::1", 80, "/a")),
])
def test_split_url(url, parts):
    assert split_url(url) == parts


@pytest.mark.parametrize("url", ["ftp://ks.example/", "ks.example/v1", "http://u:p@ks.example/",
                                 "http://ks.example:80a/", "http:///path", "http://:80/"])
def test_split_url_refuses(url):
    with pytest.raises(URLError):
        split_url(url)
