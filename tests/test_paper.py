"""The escrow key's paper backup (§13): printed once, typed back in, every typo
caught by its line's check group."""

import nacl.signing
import pytest

from client.protocol.encoding import b64encode
from client.protocol.errors import InvalidIdentity
from client.store.paper import BadBackup, format_paper_backup, parse_paper_backup

SEED = bytes(range(32))
IDENTITY = "alice@example.org"


# --- Paper backup --------------------------------------------------------------------

def _backup() -> str:
    return format_paper_backup(IDENTITY, nacl.signing.SigningKey(SEED))


def _key_lines(text):
    return [i for i, line in enumerate(text.splitlines()) if line[:1].isdigit()]


def test_backup_round_trip():
    key = nacl.signing.SigningKey.generate()
    text = format_paper_backup(IDENTITY, key)
    identity, parsed = parse_paper_backup(text)
    assert identity == IDENTITY and bytes(parsed) == bytes(key)


def test_backup_content():
    text = _backup()
    lines = text.splitlines()
    assert lines[0] == f"KEYCLIENT ESCROW KEY for {IDENTITY}"
    assert "escrow" in lines[0].lower() and "sigescrow" in text
    pubkey = b64encode(bytes(nacl.signing.SigningKey(SEED).verify_key))
    assert f"Public key (ed25519): {pubkey}" in lines
    key_lines = [lines[i] for i in _key_lines(text)]
    assert [line.split(":")[0] for line in key_lines] == ["1", "2", "3", "4"]
    for line in key_lines:
        groups = line.split(":")[1].split()
        assert all(len(group) == 4 for group in groups)


def test_backup_refuses_unnormalized_identity():
    with pytest.raises(InvalidIdentity):
        format_paper_backup("Alice@Example.org", nacl.signing.SigningKey(SEED))


@pytest.mark.parametrize("mangle", [
    str.lower,
    str.upper,
    lambda t: t.replace("\n", "\r\n"),
    lambda t: "\n".join("   " + line + "  " for line in t.splitlines()),
    lambda t: "\n".join(line.replace(" ", "") if line[:1].isdigit() else line
                        for line in t.splitlines()),
    lambda t: "\n".join(line.replace(" ", "  ").replace(":", " :") for line in t.splitlines()),
    lambda t: "\n".join(line for line in t.splitlines() if line.startswith(("KEY", "1", "2",
                                                                            "3", "4"))),
    lambda t: "notes\n" + t + "\nprinted 2024\n",
], ids=["lower", "upper", "crlf", "indented", "no-spaces", "more-spaces", "only-needed",
        "surrounded"])
def test_backup_tolerates_whitespace_and_case(mangle):
    identity, key = parse_paper_backup(mangle(_backup()))
    assert identity == IDENTITY and bytes(key) == SEED


def test_backup_reads_lookalike_digits():
    text = _backup()
    lines = text.splitlines()
    for i in _key_lines(text):
        number, rest = lines[i].split(":", 1)
        lines[i] = number + ":" + rest.replace("O", "0").replace("I", "1").replace("B", "8")
    assert parse_paper_backup("\n".join(lines))[1].encode() == SEED


def _typo_positions():
    text = _backup()
    lines = text.splitlines()
    for i in _key_lines(text):
        start = lines[i].index(":") + 1
        for j in range(start, len(lines[i])):
            if lines[i][j] != " ":
                yield i, j


@pytest.mark.parametrize("line, column", list(_typo_positions()))
def test_backup_rejects_one_character_typo(line, column):
    lines = _backup().splitlines()
    old = lines[line][column]
    new = "A" if old != "A" else "C"
    lines[line] = lines[line][:column] + new + lines[line][column + 1:]
    with pytest.raises(BadBackup, match=f"line {lines[line][0]}"):
        parse_paper_backup("\n".join(lines))


@pytest.mark.parametrize("mangle, message", [
    (lambda lines: [line for line in lines if not line.startswith("3")], "line 3 is missing"),
    (lambda lines: lines + ["2: AAAA"], "line 2 appears twice"),
    (lambda lines: lines + ["5: AAAA BBBB"], "unexpected key line 5"),
    (lambda lines: [line[:-1] if line.startswith("2") else line for line in lines],
     "line 2 has 19 characters"),
    (lambda lines: [line.replace("2:", "2: 9", 1) if line.startswith("2") else line
                    for line in lines], "'9' cannot appear"),
    (lambda lines: lines[1:], "KEYCLIENT ESCROW KEY for"),
    (lambda lines: [lines[0].replace(IDENTITY, "alice@@example.org")] + lines[1:], "identity"),
], ids=["missing", "twice", "extra", "short", "bad-char", "no-header", "bad-identity"])
def test_backup_rejects_malformed(mangle, message):
    with pytest.raises(BadBackup, match=message):
        parse_paper_backup("\n".join(mangle(_backup().splitlines())))


def test_backup_rejects_swapped_lines():
    lines = _backup().splitlines()
    one, two = (next(i for i, line in enumerate(lines) if line.startswith(n)) for n in "12")
    lines[one] = "1" + lines[two][1:]
    lines[two] = "2" + _backup().splitlines()[one][1:]
    with pytest.raises(BadBackup, match="check group"):
        parse_paper_backup("\n".join(lines))


def test_backup_rejects_wrong_public_key():
    other = b64encode(bytes(nacl.signing.SigningKey.generate().verify_key))
    lines = [line.split(":")[0] + ": " + other if line.startswith("Public key") else line
             for line in _backup().splitlines()]
    with pytest.raises(BadBackup, match="public key"):
        parse_paper_backup("\n".join(lines))


def test_backup_identity_in_header_is_normalized():
    text = _backup().replace(f"for {IDENTITY}", "for A1ice@Example.ORG", 1)
    assert parse_paper_backup(text)[0] == IDENTITY
