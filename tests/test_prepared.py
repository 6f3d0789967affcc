"""The key document answered before Flask (``keyserver.http.prepared``): the same
answer as the Flask view, the same log line and metrics, and Flask's answer whenever
the prepared one cannot be made."""

import logging
import re

from werkzeug.test import EnvironBuilder, run_wsgi_app

from conftest import at
from keyserver import create_app
from keyserver.http.prepared import PreparedAnswers
from keyserver.storage import signingkeys
from test_observability import sample, samples
from test_storage_faults import real_sqlite_error

PATH = "/_matrix/key/v2/server"


def flask_answer(app, path=PATH, method="GET"):
    """What the Flask app beneath the prepared layer answers."""
    prepared = app.wsgi_app
    assert isinstance(prepared, PreparedAnswers)
    environ = EnvironBuilder(path=path, method=method).get_environ()
    body, status, headers = run_wsgi_app(prepared.wsgi_app, environ, buffered=True)
    return status, headers, b"".join(body)


def without_request_id(headers):
    return sorted((name, value) for name, value in headers.items() if name != "X-Request-Id")


def test_the_prepared_document_is_the_flask_views_answer(app, client):
    with at(1_900_000_000_000):
        answer = client.get(PATH)
        status, headers, body = flask_answer(app)
    assert answer.status == status == "200 OK"
    assert answer.data == body and answer.json["server_name"] == "example.org"
    assert without_request_id(answer.headers) == without_request_id(headers)
    assert answer.headers["Cache-Control"] == "no-cache"
    # The same bytes again until something changes.
    with at(1_900_000_000_000 + 1000):
        assert client.get(PATH).data == body


def test_a_prepared_answer_is_logged_and_counted_as_the_view(instance, caplog):
    app = create_app({"TESTING": True, "METRICS_ENABLED": True}, instance_path=str(instance))
    client = app.test_client()
    caplog.set_level(logging.INFO, "keyserver.requests")
    before = samples(client.get("/metrics").text)
    answer = client.get(PATH, headers={"X-Request-Id": "00112233445566778899"})
    assert answer.headers["X-Request-Id"] == "00112233445566778899"
    assert re.fullmatch(r"[0-9a-f]{16}",
                        client.get(PATH, headers={"X-Request-Id": "bob@x"}).headers["X-Request-Id"])
    after = samples(client.get("/metrics").text)
    assert sample(after, "keyserver_http_requests_total", endpoint="keys.key_document",
                  method="GET", status="200") \
        - sample(before, "keyserver_http_requests_total", endpoint="keys.key_document") == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "keyserver.requests"
             and "keys.key_document" in r.getMessage()]
    assert len(lines) == 2
    assert re.fullmatch(r"request id=00112233445566778899 method=GET "
                        r"endpoint=keys.key_document status=200 errcode=- ms=[0-9.]+", lines[0])


def test_other_methods_and_paths_are_flasks(client):
    head = client.head(PATH)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(client.get(PATH).data))
    refused = client.post(PATH)
    assert refused.status_code == 405 and refused.json["errcode"] == "BAD_REQUEST"
    assert client.get(PATH + "/").status_code == 404


def test_a_database_fault_gets_flasks_answer_logged_once(app, client, monkeypatch, caplog):
    def failing(db):
        raise real_sqlite_error("full")

    monkeypatch.setattr(signingkeys, "windows", failing)
    caplog.set_level(logging.INFO, "keyserver.requests")
    answer = client.get(PATH)
    assert answer.status_code == 503 and answer.json["errcode"] == "UNAVAILABLE"
    assert "Retry-After" in answer.headers
    lines = [r.getMessage() for r in caplog.records if r.name == "keyserver.requests"]
    assert len(lines) == 1
    assert "endpoint=keys.key_document status=503 errcode=UNAVAILABLE" in lines[0]
    monkeypatch.undo()
    assert client.get(PATH).status_code == 200
