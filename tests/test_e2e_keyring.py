"""A server key rotation under gunicorn with two worker processes (§11.2), verified
by the real ``keyclient`` (§11.3): identities registered before and after it are
looked up over HTTP, every reply checked against the chain and the key document.

What really happens: each write reads the signing key from the database inside its
transaction, the same one that appends the rotation's ``keyserver@`` entry, so no
worker signs a reply with the old key once the rotation committed (the test checks
every reply's key id), though both keys stay in the document during the overlap."""

import subprocess

import requests

from conftest import (GunicornServer, WORKERS, init_live_instance, keyclient, keyserver_command,
                      registration)
from keyserver.service.signing import read_keys

SERVER = "example.org"


def register(server, identity, token):
    response = requests.put(f"{server.url}/v1/users/{identity}",
                            json={"uid_message": registration(server.url, identity)},
                            headers={"Authorization": token})
    assert response.status_code == 201, response.text
    return response.json()


def signed_with(obj) -> str:
    [key_id] = obj["signatures"][SERVER]
    return key_id


def test_a_rotation_under_two_workers_is_followed_by_keyclient(tmp_path):
    path = tmp_path / "instance"
    with GunicornServer(path, init_live_instance(path)) as server:
        home = tmp_path / "home"
        added = keyclient(home, "server", "add", server.url)
        assert added.exit_code == 0, added.output
        tokens = server.mint(8)
        before = [f"before{n}@example.org" for n in "abc"]
        after = [f"after{n}@example.org" for n in "abcde"]
        [old] = read_keys(str(path / "signing.key"))
        for identity in before:
            assert signed_with(register(server, identity, tokens.pop())) == old.key_id
        assert keyclient(home, "sync").exit_code == 0

        rotated = subprocess.run(keyserver_command("keys", "rotate", "--instance", str(path)),
                                 capture_output=True, text=True)
        assert rotated.returncode == 0, rotated.stderr
        _, new = read_keys(str(path / "signing.key"))

        # Every worker signs with the new key at once (capabilities too), and both
        # serve the overlap's document with both keys.
        pids, documents = set(), []
        for _ in range(60):
            capabilities = requests.get(server.url + "/v1/capabilities").json()
            assert signed_with(capabilities) == new.key_id
            documents.append(requests.get(server.url + "/_matrix/key/v2/server").json())
            pids = server.workers_serving("GET", "/v1/capabilities")
            if len(pids) == WORKERS:
                break
        assert len(pids) == WORKERS
        assert all(set(document["verify_keys"]) == {old.key_id, new.key_id}
                   for document in documents)
        for identity in after:
            assert signed_with(register(server, identity, tokens.pop())) == new.key_id

        synced = keyclient(home, "sync")
        assert synced.exit_code == 0, synced.output
        assert "since position 4" in synced.output          # the rotation's entry
        for identity in before + after:
            result = keyclient(home, "lookup", identity)
            assert result.exit_code == 0, result.output
            assert f"{identity}: current" in result.output
        lookup = keyclient(home, "lookup", f"keyserver@{SERVER}")
        assert "positions:  0, 4" in lookup.output
    assert server.process.returncode == 0, server.output()
