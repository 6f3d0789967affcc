"""What the operator sees (issue 18): GET /metrics (only when METRICS_ENABLED; summed
over gunicorn's workers in multiprocess mode), /healthz and /readyz, and one log line
per request with its id, never a path, a token, a voucher code or an identity."""

import logging
import re

import pytest
import requests

from conftest import (WORKERS, GunicornServer, UserActions, at, create_vouchers, init_live_instance,
                      issue, mint, registration, run_together)
from keyserver import create_app


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of a Prometheus text exposition."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def sample(values: dict[str, float], name: str, **labels) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for key, value in values.items():
        metric, _, rest = key.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if metric == name and all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


def test_metrics_are_off_unless_configured(client):
    assert client.get("/metrics").status_code == 404


@pytest.fixture
def metrics_app(instance):
    return create_app({"TESTING": True, "METRICS_ENABLED": True}, instance_path=str(instance))


def test_metrics_move_with_requests(metrics_app):
    client = metrics_app.test_client()
    users = UserActions(client)
    before = samples(client.get("/metrics").text)
    users.register("alice@example.org")
    client.get("/v1/hashchain/head")
    message, _, _ = users.create_message("alice@example.org")
    assert users.put("alice@example.org", message).status_code == 409
    code = create_vouchers(metrics_app.test_cli_runner(), 5)[0]
    assert issue(client, code, 3)[0].status_code == 200
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    after = samples(answer.text)

    def moved(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("keyserver_http_requests_total", endpoint="users.put_user", status="201") == 1
    assert moved("keyserver_http_requests_total", endpoint="users.put_user", status="409") == 1
    # Ours, and the two lastentry reads of the messages.
    assert moved("keyserver_http_requests_total", endpoint="hashchain.fetch_head",
                 method="GET", status="200") == 3
    assert moved("keyserver_http_request_duration_seconds_count",
                 endpoint="users.put_user") == 2
    assert moved("keyserver_writes_total", outcome="committed") == 2   # put, issue
    assert moved("keyserver_writes_total", outcome="refused") == 1
    assert moved("keyserver_chain_length") == 1
    assert moved("keyserver_tokens_spent_total") == 1
    assert moved("keyserver_tokens_issued_total") == 3
    assert sample(after, "keyserver_disk_free_bytes") > 0


def test_keyinit_counts_come_from_the_database(metrics_app):
    from test_keyinits import T0, KeyInitActions, make

    client = metrics_app.test_client()
    kis = KeyInitActions(client)
    with at(T0):
        alice = UserActions(client).register("alice@example.org")
        kis.added(alice, [make(alice, n) for n in (1, 2, 3)])
        kis.fetched(alice)
        values = samples(client.get("/metrics").text)
    assert sample(values, "keyserver_keyinits_added_total") == 3
    assert sample(values, "keyserver_keyinits_fetched_total") == 1
    assert sample(values, "keyserver_keyinits_stored") == 2


def test_request_log_lines_carry_an_id_and_no_path_token_or_identity(app, client, caplog):
    users = UserActions(client)
    caplog.set_level(logging.INFO, "keyserver.requests")
    token = mint(app)
    message, _, _ = users.create_message("alice@example.org")
    answer = users.put("alice@example.org", message, token=token,
                       headers={"X-Request-Id": "0123456789abcdef"})
    assert answer.status_code == 201
    assert answer.headers["X-Request-Id"] == "0123456789abcdef"
    # An id that could carry anything else is replaced by our own.
    answer = client.get("/v1/users/alice@example.org", headers={"X-Request-Id": "alice@x"})
    assert re.fullmatch(r"[0-9a-f]{16}", answer.headers["X-Request-Id"])
    lines = [r.getMessage() for r in caplog.records if r.name == "keyserver.requests"]
    assert re.fullmatch(r"request id=0123456789abcdef method=PUT endpoint=users.put_user "
                        r"status=201 errcode=- ms=[0-9.]+", lines[-2])
    assert re.fullmatch(r"request id=[0-9a-f]{16} method=GET endpoint=users.lookup_user "
                        r"status=200 errcode=- ms=[0-9.]+", lines[-1])
    from client.protocol.encoding import b64url_encode

    for line in lines:
        assert "alice" not in line and "/v1/" not in line
        assert b64url_encode(token) not in line


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"ready": True, "database": "ok", "writes": "ok", "disk": "ok"}


class MetricsServer(GunicornServer):
    def __init__(self, instance, port, multiproc_dir, min_free=None):
        self.multiproc_dir, self.min_free = multiproc_dir, min_free
        super().__init__(instance, port)

    def env(self):
        env = {**super().env(), "KEYSERVER_METRICS_ENABLED": "true",
               "PROMETHEUS_MULTIPROC_DIR": str(self.multiproc_dir)}
        if self.min_free is not None:
            env["KEYSERVER_MIN_FREE_BYTES"] = str(self.min_free)
            env["KEYSERVER_DISK_CHECK_INTERVAL"] = "0"
        return env


def test_metrics_under_gunicorn_sum_every_worker(tmp_path):
    path = tmp_path / "instance"
    folder = tmp_path / "prometheus"
    folder.mkdir()
    port = init_live_instance(path)
    with MetricsServer(path, port, folder) as server:
        before = samples(requests.get(server.url + "/metrics", timeout=30).text)
        count = 12
        tokens = server.mint(count)
        names = [f"user{letter}@example.org" for letter in "abcdefghkmnp"[:count]]
        messages = [registration(server.url, name) for name in names]
        answers = run_together(count, lambda n: requests.put(
            f"{server.url}/v1/users/{names[n]}", json={"uid_message": messages[n]},
            headers={"Authorization": tokens[n]}, timeout=30).status_code)
        assert answers == [201] * count
        after = samples(requests.get(server.url + "/metrics", timeout=30).text)
        served_by = server.workers_serving("PUT", f"/v1/users/{names[0]}")
        for name in names[1:]:
            served_by |= server.workers_serving("PUT", f"/v1/users/{name}")
    # Every worker's requests are counted, whichever worker is scraped.
    assert sample(after, "keyserver_http_requests_total", endpoint="users.put_user",
                  status="201") == count
    assert sample(after, "keyserver_writes_total", outcome="committed") - sample(
        before, "keyserver_writes_total", outcome="committed") == count
    assert sample(after, "keyserver_chain_length") - sample(
        before, "keyserver_chain_length") == count
    assert sample(after, "keyserver_tokens_spent_total") == count
    # Both workers served some (sync workers take one request at a time each).
    assert len(served_by) == WORKERS


def test_readyz_turns_not_ready_when_the_reserve_is_crossed(tmp_path):
    import os

    path = tmp_path / "instance"
    folder = tmp_path / "prometheus"
    folder.mkdir()
    port = init_live_instance(path)
    stat = os.statvfs(path)
    with MetricsServer(path, port, folder, min_free=stat.f_bavail * stat.f_frsize + 2**40) as server:
        ready = requests.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["disk"] != "ok"
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200
        assert requests.get(server.url + "/v1/hashchain/head", timeout=30).status_code == 200
        message = registration(server.url, "alice@example.org")
        answer = requests.put(server.url + "/v1/users/alice@example.org",
                              json={"uid_message": message},
                              headers={"Authorization": server.mint(1)[0]}, timeout=30)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "60"
        metrics = samples(requests.get(server.url + "/metrics", timeout=30).text)
        assert sample(metrics, "keyserver_writes_total", outcome="space") == 1
        assert sample(metrics, "keyserver_disk_free_bytes") < sample(
            metrics, "keyserver_disk_reserve_bytes")
