"""Identity normalization and validation (§2)."""

import pytest

from client.protocol.errors import InvalidIdentity
from client.protocol.identity import check_server_name, normalize_identity, parse_identity


def test_spec_vectors(vectors):
    for case in vectors["identity_normalization"]:
        if "normalized" in case:
            assert normalize_identity(case["input"]) == case["normalized"], case
        else:
            with pytest.raises(InvalidIdentity):
                normalize_identity(case["input"])


@pytest.mark.parametrize("text,expected", [
    ("J0HN1@Example.org", "iohnl@example.org"),
    ("a@b", "a@b"),
    ("x" * 64 + "@example.org", "x" * 64 + "@example.org"),
    ("ab-c.d2@example.org", "ab-c.d2@example.org"),
    ("user@exa0mple1.org", "user@exa0mple1.org"),   # the domain keeps its digits
    ("USER@EXAMPLE.ORG", "user@example.org"),
    ("jo@a-b.c0", "io@a-b.c0"),
])
def test_normalizes(text, expected):
    assert normalize_identity(text) == expected


@pytest.mark.parametrize("text", [
    "", "@", "alice@", "@example.org", "alice", "a@b@c",
    "x" * 65 + "@example.org",          # localpart over 64
    "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".cc",  # over 254 in total
    ".alice@example.org", "alice.@example.org", "a..b@example.org",
    "-a@example.org", "a-@example.org", "al ice@example.org", "al+ice@example.org",
    "alice@example..org", "alice@.example.org", "alice@example.org.", "alice@-x.org",
    "alice@x-.org", "alice@exa_mple.org", "alice@" + "b" * 64 + ".org",
    "älice@example.org", "alice@exämple.org", "alice\n@example.org",
])
def test_rejects(text):
    with pytest.raises(InvalidIdentity):
        normalize_identity(text)


def test_parse_requires_normalized_form():
    assert parse_identity("alice@example.org") == ("alice", "example.org")
    for text in ("Alice@example.org", "bob1@example.org", "jo@example.org"):
        with pytest.raises(InvalidIdentity, match="not normalized"):
            parse_identity(text)


@pytest.mark.parametrize("name", ["example.org", "localhost", "a-b.c0"])
def test_server_names(name):
    assert check_server_name(name) == name


@pytest.mark.parametrize("name", ["Example.org", "example.org:8080", "", "exa mple", "-a.org"])
def test_bad_server_names(name):
    with pytest.raises(InvalidIdentity):
        check_server_name(name)


DOMAIN_191 = ".".join(letter * 63 for letter in "abc")


def test_identities_and_server_names_at_the_length_limit():
    # §2: an identity is at most 254 characters, keyserver@<server name> included.
    longest = "x" * 62 + "@" + DOMAIN_191
    assert len(longest) == 254 and normalize_identity(longest) == longest
    with pytest.raises(InvalidIdentity) as refused:
        normalize_identity("x" + longest)
    assert str(refused.value) == f"{'x' + longest!r}: longer than 254 characters"
    server = DOMAIN_191 + "." + "d" * 52
    assert len("keyserver@" + server) == 254
    check_server_name(server)
    for name in (server + "d", server + ".e" * 5):       # 245 and 254 characters
        with pytest.raises(InvalidIdentity) as refused:
            check_server_name(name)
        assert str(refused.value) == f"server name {name!r} is too long"


def test_a_refused_identity_says_which_part_is_wrong():
    # The user's only explanation (keyclient prints it for a bad IDENTITY argument).
    for text, reason in [
        ("\u00e5lice@example.org", "'\u00e5lice@example.org': identities are ASCII only"),
        ("alice", "'alice': an identity is localpart@domain with exactly one @"),
        ("a..b@example.org", "'a..b@example.org': the part before @ must be 1-64 characters"
         " of a-z, 2-9, '.' and '-', starting and ending with a letter or digit, without"
         " '..'"),
        ("alice@-example.org", "'alice@-example.org': '-example.org' is not a valid domain"
         " name"),
    ]:
        with pytest.raises(InvalidIdentity) as refused:
            normalize_identity(text)
        assert str(refused.value) == reason
    with pytest.raises(InvalidIdentity) as refused:
        check_server_name("example.org:8080")
    assert str(refused.value) == \
        "'example.org:8080' is not a valid server name (lowercase DNS name, no port)"
