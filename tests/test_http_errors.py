"""Every errcode of §12 has a status, and every failure answers JSON."""

import pytest

from client.protocol.errors import BY_ERRCODE
from keyserver.http.errors import STATUS

SPEC_STATUS = {
    400: "BAD_REQUEST INVALID_MESSAGE INVALID_IDENTITY INVALID_SIGNATURE STALE_LASTENTRY "
         "INVALID_VALIDITY",
    401: "TOKEN_REQUIRED TOKEN_INVALID TOKEN_SPENT",
    403: "DOMAIN_NOT_SERVED RESERVED_IDENTITY VOUCHER_INVALID",
    404: "NOT_FOUND NO_KEYINIT",
    409: "IDENTITY_TAKEN MSGCOUNT_MISMATCH KEY_IN_USE KEYINIT_LIMIT",
    413: "TOO_LARGE",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}


def test_every_spec_errcode_has_its_status_and_class():
    expected = {code: status for status, codes in SPEC_STATUS.items() for code in codes.split()}
    assert STATUS == expected
    assert set(BY_ERRCODE) == set(expected)
    for code, cls in BY_ERRCODE.items():
        assert cls.errcode == code


@pytest.mark.parametrize("method,path,status,errcode", [
    ("GET", "/nowhere", 404, "NOT_FOUND"),
    ("POST", "/v1/capabilities", 405, "BAD_REQUEST"),
    ("DELETE", "/v1/hashchain", 405, "BAD_REQUEST"),
    ("GET", "/v1/hashchain?count=x", 400, "BAD_REQUEST"),
])
def test_http_failures_answer_json(client, method, path, status, errcode):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.json["errcode"] == errcode and response.json["error"]


def test_oversized_body_is_413_too_large(app, client):
    response = client.post("/v1/capabilities", data=b"x" * (app.config["MAX_REQUEST_BYTES"] + 1))
    assert response.status_code == 413
    assert response.json["errcode"] == "TOO_LARGE"
