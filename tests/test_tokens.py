"""Payment tokens (§10): RFC 9474 blind RSA, the token format, the RFC 9577 headers."""

import json
import random
import re

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from client.protocol.encoding import b64url_encode, sha256
from client.protocol.errors import InvalidMessage, TokenInvalid, VerificationError
from client.protocol.tokens import (
    _PSS, AUTHENTICATOR_LEN, TOKEN_INPUT_LEN, TOKEN_LEN, BlindSigner, InvalidBlindedMessage,
    SigningFailure, Token, blind, blind_sign, check_token, emsa_pss_encode, finalize,
    finalize_tokens, format_authorization, format_www_authenticate, generate_token_key,
    make_token_input, mint_token, parse_authorization, parse_spki, parse_token,
    prepare_blinded_tokens, spend_id, spki, token_challenge, token_key_id, verify,
)
from conftest import SERVER_NAME, VECTORS

CHALLENGE = token_challenge(SERVER_NAME)


@pytest.fixture(scope="module")
def rfc9474() -> dict:
    vectors = json.loads((VECTORS / "rfc9474-test-vectors.json").read_text(encoding="utf-8"))
    return vectors["RSABSSA-SHA384-PSS-Deterministic"]


@pytest.fixture(scope="module")
def vector_key(rfc9474) -> rsa.RSAPrivateKey:
    p, q, e, d = (int(rfc9474[name], 16) for name in ("p", "q", "e", "d"))
    public = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                 rsa.rsa_crt_iqmp(p, q), public).private_key()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_token_key()


@pytest.fixture(scope="module")
def signer(key) -> BlindSigner:
    return BlindSigner.from_private_key(key)


@pytest.fixture(scope="module")
def keys(key) -> dict:
    return {token_key_id(key.public_key()): key.public_key()}


@pytest.fixture(scope="module")
def token(key) -> Token:
    return mint_token(key, CHALLENGE)


# --- RFC 9474 -------------------------------------------------------------------


def test_rfc9474_deterministic_vector(rfc9474, vector_key):
    """Every intermediate value of the RFC's vector, byte for byte."""
    v = {name: bytes.fromhex(value) for name, value in rfc9474.items()}
    n = int(rfc9474["n"], 16)
    public = vector_key.public_key()
    assert public.public_numbers().n == n and public.key_size == 4096
    # "Deterministic": no random prefix, the message is signed as it is.
    assert v["msg_prefix"] == b"" and v["prepared_msg"] == v["msg"]

    assert emsa_pss_encode(v["msg"], n.bit_length() - 1, salt=v["salt"]) == v["encoded_msg"]
    inv = int(rfc9474["inv"], 16)
    blinded, got_inv = blind(public, v["msg"], r=pow(inv, -1, n), salt=v["salt"])
    assert blinded == v["blinded_msg"]
    assert got_inv == inv
    blind_sig = blind_sign(BlindSigner.from_private_key(vector_key), blinded)
    assert blind_sig == v["blind_sig"]
    assert finalize(public, v["msg"], blind_sig, inv) == v["sig"]
    assert verify(public, v["msg"], v["sig"])
    public.verify(v["sig"], v["msg"], _PSS, hashes.SHA384())  # any RSA-PSS verifier agrees


def test_blind_sign_finalize_round_trips_on_random_messages(key, signer):
    rng = random.Random(9474)
    public = key.public_key()
    for _ in range(20):
        msg = rng.randbytes(rng.randrange(0, 200))
        blinded, inv = blind(public, msg)
        assert len(blinded) == 256
        sig = finalize(public, msg, blind_sign(signer, blinded), inv)
        assert verify(public, msg, sig)
        flipped = bytearray(sig)
        flipped[rng.randrange(len(sig))] ^= 1 << rng.randrange(8)
        assert not verify(public, msg, bytes(flipped))
        if msg:
            changed = bytearray(msg)
            changed[rng.randrange(len(msg))] ^= 1 << rng.randrange(8)
            assert not verify(public, bytes(changed), sig)


def test_blinding_is_randomized(key):
    """The signer sees fresh values each time, so it cannot recognize a message."""
    public = key.public_key()
    first, second = blind(public, b"same"), blind(public, b"same")
    assert first[0] != second[0] and first[1] != second[1]


def test_verify_rejects_wrong_length_signature(key):
    """RFC 8017 wants exactly k bytes; OpenSSL also takes a signature shorter by
    its leading zero bytes, which would give one token two encodings."""
    public = key.public_key()
    sig = next(s for s in (key.sign(b"msg", _PSS, hashes.SHA384()) for _ in range(5000))
               if s[0] == 0)
    public.verify(sig[1:], b"msg", _PSS, hashes.SHA384())  # the leniency guarded against
    assert verify(public, b"msg", sig)
    assert not verify(public, b"msg", sig[1:])
    assert not verify(public, b"msg", b"\x00" + sig)


@pytest.mark.parametrize("value", [lambda n: n, lambda n: n + 1, lambda n: 2**2048 - 1])
def test_blind_sign_rejects_out_of_range(key, value, signer):
    n = key.public_key().public_numbers().n
    with pytest.raises(InvalidBlindedMessage, match="out of range") as info:
        blind_sign(signer, value(n).to_bytes(256, "big"))
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidMessage)


def test_blind_sign_accepts_the_range_ends(key, signer):
    n = key.public_key().public_numbers().n
    assert blind_sign(signer, bytes(256)) == bytes(256)
    assert blind_sign(signer, (n - 1).to_bytes(256, "big")) == (n - 1).to_bytes(256, "big")


@pytest.mark.parametrize("length", [0, 255, 257])
def test_blind_sign_rejects_wrong_length(signer, length):
    with pytest.raises(InvalidBlindedMessage, match="must be 256 bytes"):
        blind_sign(signer, b"\x01" * length)


def test_blind_sign_checks_its_result(key):
    """A fault in the CRT half (here a wrong d mod p-1) must not release a signature."""
    numbers = key.private_numbers()
    dmp1 = numbers.dmp1 + 2 if numbers.dmp1 + 2 < numbers.p else numbers.dmp1 - 2
    faulty = rsa.RSAPrivateNumbers(numbers.p, numbers.q, numbers.d, dmp1, numbers.dmq1,
                                   numbers.iqmp, numbers.public_numbers)
    faulty_key = faulty.private_key(unsafe_skip_rsa_key_validation=True)
    blinded, _ = blind(key.public_key(), b"msg")
    with pytest.raises(SigningFailure, match="signing failure"):
        blind_sign(BlindSigner.from_private_key(faulty_key), blinded)


def test_blind_rejects_bad_r_and_salt(key):
    public = key.public_key()
    n = public.public_numbers().n
    for r in (0, n, n + 1, key.private_numbers().p):
        with pytest.raises(ValueError, match="blinding error"):
            blind(public, b"msg", r=r)
    with pytest.raises(ValueError, match="salt"):
        blind(public, b"msg", salt=b"\x00" * 47)


def test_finalize_rejects_bad_blind_signatures(key, signer):
    public = key.public_key()
    blinded, inv = blind(public, b"msg")
    blind_sig = blind_sign(signer, blinded)
    with pytest.raises(VerificationError, match="does not verify"):
        finalize(public, b"other", blind_sig, inv)
    with pytest.raises(VerificationError, match="does not verify"):
        finalize(public, b"msg", blind_sig[:-1] + bytes([blind_sig[-1] ^ 1]), inv)
    with pytest.raises(VerificationError, match="256 bytes"):
        finalize(public, b"msg", blind_sig[1:], inv)


# --- keys and the format of §10.1 -----------------------------------------------


def test_token_challenge_vector(vectors):
    vector = vectors["token_challenge"]
    challenge = token_challenge(vector["server_name"])
    assert challenge.hex() == vector["token_challenge"]
    assert sha256(challenge).hex() == vector["challenge_digest"]


def test_token_key_id_vector(vectors, vector_key):
    vector = vectors["token_key_id"]
    assert spki(vector_key.public_key()).hex() == vector["spki"]
    assert token_key_id(vector_key.public_key()).hex() == vector["token_key_id"]
    assert sha256(bytes.fromhex(vector["spki"])).hex() == vector["token_key_id"]


def test_token_challenge_rejects_non_ascii():
    with pytest.raises(ValueError):
        token_challenge("exämple.org")


def test_generated_key_and_spki_round_trip(key):
    public = key.public_key()
    assert public.key_size == 2048 and public.public_numbers().e == 65537
    assert parse_spki(spki(public)).public_numbers() == public.public_numbers()


def test_parse_spki_rejects(vector_key):
    ed_key = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_spki = ed_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    small = rsa.generate_private_key(65537, 1024).public_key()
    for data, message in [(b"", "not a DER"), (b"\x30\x00", "not a DER"),
                          (ed_spki, "not an RSA key"),
                          (spki(vector_key.public_key()), "RSA-2048"),
                          (spki(small), "RSA-2048")]:
        with pytest.raises(InvalidMessage, match=message):
            parse_spki(data)
    with pytest.raises(VerificationError, match="not a DER SubjectPublicKeyInfo"):
        parse_spki(b"junk", error=VerificationError)


def test_token_layout(key, token):
    nonce = bytes(range(32))
    digest, key_id = sha256(CHALLENGE), token_key_id(key.public_key())
    token_input = make_token_input(digest, key_id, nonce)
    assert token_input == b"\x00\x02" + nonce + digest + key_id
    assert len(token_input) == TOKEN_INPUT_LEN == 98
    parsed = parse_token(token.to_bytes())
    assert parsed == token and len(token.to_bytes()) == TOKEN_LEN == 354
    assert (token.challenge_digest, token.key_id) == (digest, key_id)
    assert token.to_bytes()[:98] == b"\x00\x02" + token.nonce + digest + key_id
    assert spend_id(token) == sha256(token.token_input)


def test_make_token_input_is_fresh_and_checks_lengths(key):
    key_id = token_key_id(key.public_key())
    digest = sha256(CHALLENGE)
    assert make_token_input(digest, key_id) != make_token_input(digest, key_id)
    with pytest.raises(ValueError):
        make_token_input(sha256(CHALLENGE)[:31], key_id)
    with pytest.raises(ValueError):
        make_token_input(sha256(CHALLENGE), key_id, b"\x00" * 33)


def test_spend_id_ignores_the_signature_salt(key, keys, token):
    """PSS gives many signatures per input; all of them spend the same token."""
    again = Token(token.token_input, key.sign(token.token_input, _PSS, hashes.SHA384()))
    assert again.authenticator != token.authenticator
    check_token(again, challenge=CHALLENGE, keys=keys)
    assert spend_id(again) == spend_id(token)


# --- checking tokens ------------------------------------------------------------


def test_minted_token_passes_check(token, keys):
    check_token(token, challenge=CHALLENGE, keys=keys)
    check_token(parse_token(token.to_bytes()), challenge=CHALLENGE, keys=keys)


def test_mint_token_refuses_other_key_sizes(vector_key):
    with pytest.raises(ValueError, match="RSA-2048"):
        mint_token(vector_key, CHALLENGE)


def _data(token, i, value):
    data = bytearray(token.to_bytes())
    data[i] = value
    return bytes(data)


@pytest.mark.parametrize("make,message", [
    (lambda t: b"", "354 bytes, not 0"),
    (lambda t: t.to_bytes()[:-1], "354 bytes, not 353"),
    (lambda t: t.to_bytes()[:98], "354 bytes, not 98"),
    (lambda t: t.to_bytes() + b"\x00", "354 bytes, not 355"),
    (lambda t: _data(t, 1, 0x01), "type must be 0x0002, not 0x0001"),
    (lambda t: _data(t, 1, 0x03), "type must be 0x0002, not 0x0003"),
    (lambda t: _data(t, 0, 0x01), "type must be 0x0002, not 0x0102"),
])
def test_parse_token_rejects(token, make, message):
    with pytest.raises(TokenInvalid, match=message):
        parse_token(make(token))


def test_check_token_rejects_wrong_challenge(key, keys):
    other = mint_token(key, token_challenge("other.example"))
    with pytest.raises(TokenInvalid, match="wrong challenge"):
        check_token(other, challenge=CHALLENGE, keys=keys)


def test_check_token_rejects_unknown_or_expired_key(token, key):
    with pytest.raises(TokenInvalid, match="unknown or expired token key"):
        check_token(token, challenge=CHALLENGE, keys={})
    with pytest.raises(TokenInvalid, match="unknown or expired token key"):
        check_token(token, challenge=CHALLENGE, keys={b"\x00" * 32: key.public_key()})


def test_check_token_rejects_bad_signature(token, keys, key):
    forged = Token(token.token_input, b"\x00" * AUTHENTICATOR_LEN)
    with pytest.raises(TokenInvalid, match="bad signature"):
        check_token(forged, challenge=CHALLENGE, keys=keys)
    other = mint_token(key, CHALLENGE)
    swapped = Token(token.token_input, other.authenticator)
    with pytest.raises(TokenInvalid, match="bad signature"):
        check_token(swapped, challenge=CHALLENGE, keys=keys)
    # A key under the wrong id: the id must name the key that signed.
    impostor = {token.key_id: generate_token_key().public_key()}
    with pytest.raises(TokenInvalid, match="bad signature"):
        check_token(token, challenge=CHALLENGE, keys=impostor)


def test_any_flipped_bit_is_rejected(token, keys):
    rng = random.Random(9578)
    data = token.to_bytes()
    positions = [0, 1, 2, 33, 34, 65, 66, 97, 98, 353]
    positions += [rng.randrange(TOKEN_LEN) for _ in range(20)]
    for i in positions:
        tampered = bytearray(data)
        tampered[i] ^= 1 << rng.randrange(8)
        with pytest.raises(TokenInvalid):
            check_token(parse_token(bytes(tampered)), challenge=CHALLENGE, keys=keys)
        bad = Token(bytes(tampered[:98]), bytes(tampered[98:]))
        assert not verify(next(iter(keys.values())), bad.token_input, bad.authenticator)


# --- issuance ---------------------------------------------------------------------


def test_voucher_issuance_round_trip(key, keys, signer):
    public = key.public_key()
    pending = prepare_blinded_tokens(public, CHALLENGE, 3)
    assert len(pending) == 3 and all(len(item.blinded) == 256 for item in pending)
    assert len({item.token_input for item in pending}) == 3
    blind_sigs = [blind_sign(signer, item.blinded) for item in pending]
    tokens = finalize_tokens(public, pending, blind_sigs)
    for item, got in zip(pending, tokens):
        assert got.token_input == item.token_input
        check_token(parse_token(got.to_bytes()), challenge=CHALLENGE, keys=keys)
    assert prepare_blinded_tokens(public, CHALLENGE, 0) == []


def test_finalize_tokens_rejects_bad_answers(key, signer):
    public = key.public_key()
    pending = prepare_blinded_tokens(public, CHALLENGE, 2)
    blind_sigs = [blind_sign(signer, item.blinded) for item in pending]
    with pytest.raises(VerificationError, match="expected 2 blind signatures, got 1"):
        finalize_tokens(public, pending, blind_sigs[:1])
    with pytest.raises(VerificationError, match="blind signature 1"):
        finalize_tokens(public, pending, [blind_sigs[0], blind_sigs[0]])
    other = generate_token_key()
    n_other = other.public_key().public_numbers().n
    # another key's signatures (of the messages reduced below its modulus, which may
    # be smaller than ours) must not finalize
    other_signer = BlindSigner.from_private_key(other)
    wrong = [blind_sign(other_signer,
                        (int.from_bytes(item.blinded, "big") % n_other).to_bytes(256, "big"))
             for item in pending]
    with pytest.raises(VerificationError, match="blind signature 0"):
        finalize_tokens(public, pending, wrong)


def test_prepare_refuses_other_key_sizes(vector_key):
    with pytest.raises(ValueError, match="RSA-2048"):
        prepare_blinded_tokens(vector_key.public_key(), CHALLENGE, 1)


# --- headers (RFC 9577) ----------------------------------------------------------------

RAW = bytes([0xFB, 0xFF, 0xBF]) * 118  # "-", "_" in base64url, "+", "/" in standard
ENCODED = b64url_encode(RAW)


def test_authorization_round_trip(token):
    header = format_authorization(token.to_bytes())
    assert header == f'PrivateToken token="{b64url_encode(token.to_bytes())}"'
    assert parse_token(parse_authorization(header)) == token


@pytest.mark.parametrize("header", [
    f'PrivateToken token="{ENCODED}"',
    f'  privatetoken   token="{ENCODED}"  ',
    f'PRIVATETOKEN\ttoken={ENCODED}',
    f'PrivateToken TOKEN = "{ENCODED}"',
    f'PrivateToken token="{ENCODED}", extra="x, y"',
    f'PrivateToken other=1 ,token="{ENCODED}",,',
    f'PrivateToken ,token="{ENCODED}"',
    f'PrivateToken token="{ENCODED[:5]}\\{ENCODED[5:]}"',     # a quoted-pair (RFC 9110)
])
def test_parse_authorization_tolerates(header):
    assert "-" in ENCODED and "_" in ENCODED
    assert parse_authorization(header) == RAW


@pytest.mark.parametrize("header", [
    None, "", "   ", "Bearer abc", f'Basic token="{ENCODED}"',
    f'PrivateTokens token="{ENCODED}"', f'Private-Token token="{ENCODED}"',
])
def test_parse_authorization_without_private_token(header):
    assert parse_authorization(header) is None


@pytest.mark.parametrize("header,message", [
    ("PrivateToken", "no token"),
    ('PrivateToken other="x"', "no token"),
    ('PrivateToken token=""', "token: must not be empty"),
    (f'PrivateToken token="{ENCODED}="', "token: not unpadded base64"),
    (f'PrivateToken token="{b64url_encode(RAW[:-1])}=="', "token: not unpadded base64"),
    (f'PrivateToken token="{ENCODED.replace("-", "+").replace("_", "/")}"',
     "token: not unpadded base64"),
    (f'PrivateToken token="{ENCODED[:-1]}"', "token: non-canonical base64"),
    (f'PrivateToken token="{b64url_encode(b"0123456789")[:-1]}B"',
     "token: non-canonical base64"),
    (f'PrivateToken token="{ENCODED} "', "token: not unpadded base64"),
    (f'PrivateToken token="{ENCODED}", token="{ENCODED}"', "duplicate"),
    (f'PrivateToken token="{ENCODED}" extra=1', "separated by commas"),
    (f'PrivateToken {ENCODED}', "malformed"),
    (f'PrivateToken token="{ENCODED}', "malformed"),
])
def test_parse_authorization_rejects(header, message):
    """TOKEN_INVALID, whose text names the token parameter when its base64 is off."""
    with pytest.raises(TokenInvalid, match=re.escape(message)):
        parse_authorization(header)


def test_www_authenticate(key):
    key_spki = spki(key.public_key())
    header = format_www_authenticate(CHALLENGE, key_spki)
    assert header == (f'PrivateToken challenge="{b64url_encode(CHALLENGE)}", '
                      f'token-key="{b64url_encode(key_spki)}"')
