"""The production server (deploy/keyserver.service: granian with deploy/granian.env's
settings) serving the app: the key document, a paid registration and a lookup over
a keep-alive connection, both workers started, and one request log line each on
stderr, naming the endpoint, never the path. The bounded waits under granian are in
test_e2e_bounded_waits.py; gunicorn is covered by the other e2e tests."""

import re

import pytest
import requests

from conftest import GranianServer, granian_settings, init_live_instance, registration
from test_serverkeys import verifies_with_signedjson


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("granian") / "instance"
    with GranianServer(path, init_live_instance(path)) as server:
        yield server


def test_the_deploy_settings_serve_the_app_and_log_each_request_once(server):
    identity = "alice@example.org"
    with requests.Session() as session:           # one keep-alive connection
        document = session.get(server.url + "/_matrix/key/v2/server", timeout=30)
        assert document.status_code == 200
        verifies_with_signedjson(document.json())
        [token] = server.mint(1)
        put = session.put(f"{server.url}/v1/users/{identity}",
                          json={"uid_message": registration(server.url, identity)},
                          headers={"Authorization": token, "X-Request-Id": "00c0ffee00c0ffee"},
                          timeout=30)
        assert put.status_code == 201, put.text
        assert put.headers["X-Request-Id"] == "00c0ffee00c0ffee"
        lookup = session.get(f"{server.url}/v1/users/{identity}", timeout=30)
        assert lookup.status_code == 200
    lines = [line for line in server.output().splitlines() if " in observe: request " in line]
    assert [line for line in lines if "id=00c0ffee00c0ffee" in line] == [
        next(line for line in lines if "endpoint=users.put_user" in line)]
    assert re.search(r"method=PUT endpoint=users\.put_user status=201 errcode=- ms=[0-9.]+$",
                     lines[-2])
    assert "endpoint=users.lookup_user status=200" in lines[-1]
    assert not any("alice" in line or "/v1/" in line for line in lines)
    started = re.findall(r"Started worker-(\d+)", server.output())
    assert len(started) == int(granian_settings()["GRANIAN_WORKERS"]) == 2
