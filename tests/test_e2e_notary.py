"""A real keyserver corroborated by a real notary (§11.4), both server processes on
127.0.0.1, and the real keyclient: the honest server is accepted, and a split view
(the server shows this client a key of its own making, while the notary fetched the
real one) is refused with both documents shown."""

import subprocess

import nacl.signing
import requests

from client.protocol.encoding import b64encode
from conftest import LiveServer, free_port, init_live_instance, keyclient, keyserver_command
from tamper_proxy import KEY_DOCUMENT, TamperProxy, key_document_changed


def start_notary(path, origin_url):
    """A keyserver named notary.test that notarizes example.org, fetched at ``origin_url``."""
    port = free_port()
    subprocess.run(keyserver_command("init", "--instance", str(path), "--server-name",
                                     "notary.test", "--url", f"http://127.0.0.1:{port}"),
                   check=True, capture_output=True)
    with open(path / "config.py", "a") as config:
        config.write(f"NOTARY_ORIGINS = {{'example.org': {origin_url!r}}}\n")
    return LiveServer(path, port)


def notary_args(notary):
    document = requests.get(notary.url + KEY_DOCUMENT, timeout=5).json()
    [(key_id, key)] = document["verify_keys"].items()
    return ["notary.test", notary.url, key_id, key["key"]]


def test_a_real_notary_corroborates_the_server_and_catches_a_split_view(tmp_path):
    origin_path = tmp_path / "origin"
    with LiveServer(origin_path, init_live_instance(origin_path)) as origin, \
            start_notary(tmp_path / "notary", origin.url) as notary, \
            TamperProxy(origin.url) as proxy:
        honest = tmp_path / "honest"
        assert keyclient(honest, "notary", "add", *notary_args(notary)).exit_code == 0
        added = keyclient(honest, "server", "add", origin.url)
        assert added.exit_code == 0, added.output
        assert keyclient(honest, "sync").exit_code == 0

        evil = nacl.signing.SigningKey.generate()

        proxy.attack = key_document_changed(    # a split view: a key of its own making
            lambda document: document.update(verify_keys={
                "ed25519:evil": {"key": b64encode(bytes(evil.verify_key))}}),
            {"ed25519:evil": evil})
        victim = tmp_path / "victim"
        assert keyclient(victim, "notary", "add", *notary_args(notary)).exit_code == 0
        refused = keyclient(victim, "server", "add", proxy.url)
        assert refused.exit_code == 1, refused.output
        assert "reports other keys of example.org" in refused.output
        assert b64encode(bytes(evil.verify_key)) in refused.output       # shown to us
        real = requests.get(origin.url + KEY_DOCUMENT, timeout=5).json()["verify_keys"]
        assert next(iter(real.values()))["key"] in refused.output          # seen by the notary
        assert "example.org" not in keyclient(victim, "server", "list").output
        assert proxy.errors == []
