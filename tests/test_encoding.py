"""Canonical JSON, base64 and strict JSON (§1)."""

import pytest

from client.protocol.encoding import (b64decode, b64encode, b64url_decode, b64url_encode, canonical_json,
                             format_ms, parse_json_object, require_fields, require_int)
from client.protocol.errors import BadRequest, InvalidMessage


def test_canonical_json_vector(vectors):
    case = vectors["canonical_json"]
    assert canonical_json(case["object"]) == case["canonical_utf8"].encode("utf-8")


def test_canonical_json_refuses_floats_nan():
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", bytes(range(256)),
                                  b"\x00\x00\x17"])   # ends in "X": only "=" is stripped
def test_base64_round_trip(data):
    assert b64decode(b64encode(data), allow_empty=True) == data
    assert b64url_decode(b64url_encode(data)) == data if data else True
    assert "=" not in b64encode(data) and "=" not in b64url_encode(data)


@pytest.mark.parametrize("value,why", [
    ("QQ==", "padded"),
    ("QR", "non-canonical"),          # trailing bits set
    ("Q", "impossible length"),
    ("QUJD\n", "newline"),
    ("QU JD", "space"),
    ("QUJ-", "url alphabet in a std field"),
    (123, "not a string"),
    (None, "null"),
])
def test_base64_rejects(value, why):
    with pytest.raises(InvalidMessage):
        b64decode(value)


def test_base64_exact_length_and_empty():
    assert b64decode(b64encode(bytes(32)), length=32) == bytes(32)
    with pytest.raises(InvalidMessage, match="32 bytes"):
        b64decode(b64encode(bytes(31)), length=32)
    with pytest.raises(InvalidMessage, match="empty"):
        b64decode("")
    assert b64decode("", allow_empty=True) == b""


def test_base64url_rejects_std_alphabet():
    with pytest.raises(BadRequest):
        b64url_decode("ab+/")


def test_base64url_exact_length():
    """A UIDIndex or sigkeyhash in a path is 32 bytes, or the request is refused."""
    assert b64url_decode(b64url_encode(bytes(32)), "UIDIndex", length=32) == bytes(32)
    with pytest.raises(BadRequest, match="UIDIndex: must encode 32 bytes, not 31"):
        b64url_decode(b64url_encode(bytes(31)), "UIDIndex", length=32)


def test_strict_json_accepts_object():
    assert parse_json_object('{"a": [1, "é"]}'.encode()) == {"a": [1, "é"]}


@pytest.mark.parametrize("body", [
    b"\xff{}", b"{", b"[]", b"1", b'"x"', b'{"a":1,"a":2}', b'{"a":NaN}', b'{"a":Infinity}',
    b'{"a":"\\ud800"}', b'{"\\udc00":1}', b"",
    b'{"a":[1,"\\ud800"]}',             # a lone surrogate inside an array, too
])
def test_strict_json_rejects(body):
    with pytest.raises(BadRequest):
        parse_json_object(body)


@pytest.mark.parametrize("value", [True, 1.0, -1, 2**53, "1", None])
def test_integers_are_json_integers_in_range(value):
    with pytest.raises(InvalidMessage):
        require_int(value, "x")
    assert require_int(2**53 - 1, "x") == 2**53 - 1


def test_require_fields_names_missing_and_unknown():
    with pytest.raises(InvalidMessage, match="missing b"):
        require_fields({"a": 1}, {"a", "b"}, "obj")
    with pytest.raises(InvalidMessage, match="unknown c"):
        require_fields({"a": 1, "b": 2, "c": 3}, {"a", "b"}, "obj")
    with pytest.raises(InvalidMessage, match="JSON object"):
        require_fields([], {"a"}, "obj")


def test_format_ms_is_utc_to_the_second(monkeypatch):
    assert format_ms(0) == "1970-01-01 00:00:00 UTC"
    assert format_ms(1_700_000_000_999) == "2023-11-14 22:13:20 UTC"
    # Whatever the machine's time zone: a time it names as UTC is UTC.
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert format_ms(0) == "1970-01-01 00:00:00 UTC"
    finally:
        monkeypatch.undo()
        time.tzset()
