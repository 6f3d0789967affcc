"""Payment tokens (§10): RFC 9578 token type 0x0002 on RFC 9474 blind RSA.

Three layers, all pure (no I/O, no clock):

* RFC 9474 RSABSSA-SHA384-PSS-Deterministic: ``blind``, ``blind_sign``,
  ``finalize``, ``verify``. "Deterministic" is the RFC's name for the variant
  without a random message prefix; the PSS salt is still random. Blinding needs
  the encoded message as an integer, which no library exposes, so
  EMSA-PSS-ENCODE (RFC 8017 §9.1.1) is implemented here; verification is
  cryptography's ordinary RSA-PSS, since a finalized blind signature is an
  ordinary signature. BlindSign is raw RSA on the requester's input, which no
  library offers either: it runs on GMP (``gmpy2.powmod_sec``, constant time)
  with a ``BlindSigner`` prepared once per key.
* Token keys and the token format of §10.1 (shaped after RFC 9578):
  ``spki``/``parse_spki``, ``token_key_id``, ``token_challenge``,
  ``make_token_input``, ``Token``/``parse_token``, ``check_token``, ``spend_id``.
* The HTTP authentication scheme of RFC 9577: ``format_authorization``/
  ``parse_authorization`` and ``format_www_authenticate``.

Nothing here assumes a key size, because the RFC 9474 vector key is 4096-bit;
only the token helpers insist on the 2048-bit keys that §10.1 prescribes.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import gmpy2
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from gmpy2 import mpz

from .encoding import b64url_decode, b64url_encode, sha256
from .errors import InvalidMessage, TokenInvalid, VerificationError

#: RFC 9578 token type of publicly verifiable (blind RSA) tokens.
TOKEN_TYPE = 0x0002
TOKEN_KEY_BITS = 2048
TOKEN_KEY_EXPONENT = 65537
NONCE_LEN = 32
DIGEST_LEN = 32
TOKEN_INPUT_LEN = 2 + NONCE_LEN + DIGEST_LEN + DIGEST_LEN
AUTHENTICATOR_LEN = TOKEN_KEY_BITS // 8
TOKEN_LEN = TOKEN_INPUT_LEN + AUTHENTICATOR_LEN
#: PSS salt length of RSABSSA-SHA384-PSS-*: the hash length (RFC 9474 §5).
SALT_LEN = 48
SCHEME = "PrivateToken"

_HASH_LEN = hashlib.sha384().digest_size
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=SALT_LEN)


class InvalidBlindedMessage(InvalidMessage, ValueError):
    """A blinded message that is not a representative in [0, n) of the right length.

    It is untrusted input from a voucher request, so it carries the
    ``INVALID_MESSAGE`` errcode, and it is a ``ValueError`` for callers that
    use ``blind_sign`` outside the protocol.
    """


class SigningFailure(RuntimeError):
    """The RSA computation gave a wrong result (fault or bad key), so nothing is released.

    A faulty CRT signature would reveal a factor of n (Boneh-DeMillo-Lipton);
    the key may be damaged, so this must not be caught and retried silently.
    """


# --- RFC 9474 blind RSA ------------------------------------------------------


def _modulus_len(public_key: rsa.RSAPublicKey) -> int:
    return (public_key.key_size + 7) // 8


def _mgf1_sha384(seed: bytes, length: int) -> bytes:
    out = b"".join(hashlib.sha384(seed + i.to_bytes(4, "big")).digest()
                   for i in range(-(-length // _HASH_LEN)))
    return out[:length]


def emsa_pss_encode(msg: bytes, em_bits: int, *, salt: bytes | None = None) -> bytes:
    """RFC 8017 §9.1.1 with SHA-384, MGF1-SHA-384 and a 48-byte salt.

    Callers pass ``em_bits = modBits - 1`` as RSASSA-PSS-SIGN does, so that the
    result is what any RSA-PSS verifier expects. ``salt`` is injectable only
    for known-answer tests; a repeated salt would let a server link tokens.
    """
    if salt is None:
        salt = secrets.token_bytes(SALT_LEN)
    if len(salt) != SALT_LEN:
        raise ValueError(f"PSS salt must be {SALT_LEN} bytes, not {len(salt)}")
    em_len = (em_bits + 7) // 8
    if em_len < _HASH_LEN + SALT_LEN + 2:
        raise ValueError("encoding error: RSA modulus too small for SHA-384 PSS")
    m_hash = hashlib.sha384(msg).digest()
    h = hashlib.sha384(bytes(8) + m_hash + salt).digest()
    db = bytes(em_len - SALT_LEN - _HASH_LEN - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1_sha384(h, len(db))))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    return bytes(masked) + h + b"\xbc"


def blind(public_key: rsa.RSAPublicKey, msg: bytes, *, r: int | None = None,
          salt: bytes | None = None) -> tuple[bytes, int]:
    """RFC 9474 §4.2 Blind: hides ``msg`` from the signer, returns (blinded_msg, inv).

    ``r`` and ``salt`` are injectable only to reproduce the RFC's test vector;
    in use both must be fresh and secret, or the signer can link the token.
    """
    numbers = public_key.public_numbers()
    n, e = numbers.n, numbers.e
    encoded = emsa_pss_encode(msg, n.bit_length() - 1, salt=salt)
    m = int.from_bytes(encoded, "big")
    if math.gcd(m, n) != 1:
        raise ValueError("invalid input: encoded message shares a factor with n")
    if r is None:
        r = secrets.randbelow(n - 1) + 1
    if not 1 <= r < n or math.gcd(r, n) != 1:
        raise ValueError("blinding error: r must be invertible modulo n")
    inv = pow(r, -1, n)
    z = m * pow(r, e, n) % n
    return z.to_bytes(_modulus_len(public_key), "big"), inv


@dataclass(frozen=True, repr=False)
class BlindSigner:
    """A private token key prepared for ``blind_sign``: its CRT numbers as GMP integers.

    Build it once per key (``from_private_key``) and keep it: a voucher request
    signs up to 100 messages with one key. ``repr=False`` keeps the secret
    numbers out of logs and tracebacks.
    """

    n: mpz
    e: mpz
    p: mpz
    q: mpz
    dp: mpz
    dq: mpz
    qinv: mpz
    size: int  # the modulus length in bytes: of every blinded message and signature

    @classmethod
    def from_private_key(cls, private_key: rsa.RSAPrivateKey) -> BlindSigner:
        numbers = private_key.private_numbers()
        public = numbers.public_numbers
        return cls(mpz(public.n), mpz(public.e), mpz(numbers.p), mpz(numbers.q),
                   mpz(numbers.dmp1), mpz(numbers.dmq1), mpz(numbers.iqmp),
                   _modulus_len(private_key.public_key()))


def blind_sign(signer: BlindSigner, blinded_msg: bytes) -> bytes:
    """RFC 9474 §4.3 BlindSign: the raw RSA signature of a blinded message.

    The message is chosen by the requester, so the secret exponentiations run in
    constant time (GMP's ``mpz_powm_sec``, §10.3), one per CRT half. The signer
    cannot check what it signs, so it checks its own arithmetic instead
    (s^e mod n == m) before releasing anything: a fault in one CRT half would
    otherwise give away a factor of n.
    """
    k = signer.size
    if len(blinded_msg) != k:
        raise InvalidBlindedMessage(f"blinded message must be {k} bytes, not {len(blinded_msg)}")
    m = mpz(int.from_bytes(blinded_msg, "big"))
    if m >= signer.n:
        raise InvalidBlindedMessage("message representative out of range: blinded message >= n")
    s1 = gmpy2.powmod_sec(m, signer.dp, signer.p)
    s2 = gmpy2.powmod_sec(m, signer.dq, signer.q)
    h = signer.qinv * (s1 - s2) % signer.p  # Garner's recombination (RFC 8017 §5.2.1)
    s = s2 + h * signer.q
    if gmpy2.powmod(s, signer.e, signer.n) != m:
        raise SigningFailure("signing failure: RSA result does not verify")
    return int(s).to_bytes(k, "big")


def finalize(public_key: rsa.RSAPublicKey, msg: bytes, blind_sig: bytes, inv: int) -> bytes:
    """RFC 9474 §4.4 Finalize: unblinds and verifies, so a bad signer is caught here."""
    n = public_key.public_numbers().n
    k = _modulus_len(public_key)
    if len(blind_sig) != k:
        raise VerificationError(f"blind signature must be {k} bytes, not {len(blind_sig)}")
    sig = (int.from_bytes(blind_sig, "big") * inv % n).to_bytes(k, "big")
    if not verify(public_key, msg, sig):
        raise VerificationError("blind signature does not verify")
    return sig


def verify(public_key: rsa.RSAPublicKey, msg: bytes, sig: bytes) -> bool:
    """RSASSA-PSS-VERIFY with SHA-384, MGF1-SHA-384 and a 48-byte salt.

    RFC 8017 §8.1.2 demands a signature of exactly the modulus length;
    OpenSSL would accept a shorter one, so that is checked first.
    """
    if len(sig) != _modulus_len(public_key):
        return False
    try:
        public_key.verify(sig, msg, _PSS, hashes.SHA384())
    except _CryptoInvalidSignature:
        return False
    return True


# --- Token keys ----------------------------------------------------------------


def generate_token_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=TOKEN_KEY_EXPONENT, key_size=TOKEN_KEY_BITS)


def spki(public_key: rsa.RSAPublicKey) -> bytes:
    """DER SubjectPublicKeyInfo with the rsaEncryption OID, as §10.1 hashes it."""
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def parse_spki(data: bytes, *, error: type[Exception] = InvalidMessage) -> rsa.RSAPublicKey:
    """A token key as published (capabilities, WWW-Authenticate), else ``error``.

    Only the canonical DER is accepted, because the key id is a hash of these
    bytes: two encodings of one key would give two key ids.
    """
    try:
        key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise error("token key: not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise error("token key: not an RSA key")
    if key.key_size != TOKEN_KEY_BITS or key.public_numbers().e != TOKEN_KEY_EXPONENT:
        raise error(f"token key: must be RSA-{TOKEN_KEY_BITS} with e = {TOKEN_KEY_EXPONENT}")
    if spki(key) != data:
        raise error("token key: non-canonical SubjectPublicKeyInfo")
    return key


def token_key_id(public_key: rsa.RSAPublicKey) -> bytes:
    return sha256(spki(public_key))


def _require_token_key(public_key: rsa.RSAPublicKey) -> None:
    if public_key.key_size != TOKEN_KEY_BITS:
        raise ValueError(f"token keys are RSA-{TOKEN_KEY_BITS}, not {public_key.key_size}-bit")


# --- Token format (§10.1) -------------------------------------------------------


def token_challenge(server_name: str) -> bytes:
    """The RFC 9578 TokenChallenge with issuer = origin = server_name and no context."""
    name = server_name.encode("ascii")
    if not 0 < len(name) <= 0xFFFF:
        raise ValueError("server_name must be 1 to 65535 ASCII characters")
    length = len(name).to_bytes(2, "big")
    return TOKEN_TYPE.to_bytes(2, "big") + length + name + b"\x00" + length + name


def make_token_input(challenge_digest: bytes, key_id: bytes, nonce: bytes | None = None) -> bytes:
    """The signed part of a token; the random nonce is what makes each token unique."""
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_LEN)
    if len(nonce) != NONCE_LEN or len(challenge_digest) != DIGEST_LEN or len(key_id) != DIGEST_LEN:
        raise ValueError("nonce, challenge digest and key id must be 32 bytes each")
    return TOKEN_TYPE.to_bytes(2, "big") + nonce + challenge_digest + key_id


@dataclass(frozen=True)
class Token:
    token_input: bytes
    authenticator: bytes

    def __post_init__(self) -> None:
        if len(self.token_input) != TOKEN_INPUT_LEN or len(self.authenticator) != AUTHENTICATOR_LEN:
            raise ValueError(f"a token is {TOKEN_INPUT_LEN} + {AUTHENTICATOR_LEN} bytes")

    @property
    def nonce(self) -> bytes:
        return self.token_input[2:2 + NONCE_LEN]

    @property
    def challenge_digest(self) -> bytes:
        return self.token_input[2 + NONCE_LEN:2 + NONCE_LEN + DIGEST_LEN]

    @property
    def key_id(self) -> bytes:
        return self.token_input[2 + NONCE_LEN + DIGEST_LEN:]

    def to_bytes(self) -> bytes:
        return self.token_input + self.authenticator


def parse_token(data: bytes) -> Token:
    if len(data) != TOKEN_LEN:
        raise TokenInvalid(f"token must be {TOKEN_LEN} bytes, not {len(data)}")
    token_type = int.from_bytes(data[:2], "big")
    if token_type != TOKEN_TYPE:
        raise TokenInvalid(f"token type must be 0x{TOKEN_TYPE:04x}, not 0x{token_type:04x}")
    return Token(data[:TOKEN_INPUT_LEN], data[TOKEN_INPUT_LEN:])


def check_token(token: Token, *, challenge: bytes,
                keys: Mapping[bytes, rsa.RSAPublicKey]) -> None:
    """The server's checks of §10.2 short of double spending, which only the database decides.

    ``keys`` maps key ids to the token keys still valid now, so that the
    caller, which knows the clock, decides expiry.
    """
    if token.challenge_digest != sha256(challenge):
        raise TokenInvalid("wrong challenge: token is not for this server")
    key = keys.get(token.key_id)
    if key is None:
        raise TokenInvalid("unknown or expired token key")
    if not verify(key, token.token_input, token.authenticator):
        raise TokenInvalid("bad signature: token authenticator does not verify")


def spend_id(token: Token) -> bytes:
    """What the server records as spent: the input, so that re-randomized
    (different salt) signatures of one input still count as the same token."""
    return sha256(token.token_input)


# --- Issuance (§10.3) ---------------------------------------------------------------


@dataclass(frozen=True)
class PendingToken:
    """A token input sent blinded for signing; ``inv`` must stay secret until finalized."""

    token_input: bytes
    blinded: bytes
    inv: int


def prepare_blinded_tokens(public_key: rsa.RSAPublicKey, challenge: bytes,
                           count: int) -> list[PendingToken]:
    _require_token_key(public_key)
    if count < 0:
        raise ValueError("count must not be negative")
    digest, key_id = sha256(challenge), token_key_id(public_key)
    pending = []
    for _ in range(count):
        token_input = make_token_input(digest, key_id)
        blinded, inv = blind(public_key, token_input)
        pending.append(PendingToken(token_input, blinded, inv))
    return pending


def finalize_tokens(public_key: rsa.RSAPublicKey, pending: Sequence[PendingToken],
                    blind_sigs: Sequence[bytes]) -> list[Token]:
    """Unblinds the server's answer; any bad signature rejects the whole batch,
    since the server already spent the voucher and the user must know."""
    if len(blind_sigs) != len(pending):
        raise VerificationError(f"expected {len(pending)} blind signatures, got {len(blind_sigs)}")
    tokens = []
    for i, (item, blind_sig) in enumerate(zip(pending, blind_sigs)):
        try:
            sig = finalize(public_key, item.token_input, blind_sig, item.inv)
        except VerificationError as exc:
            raise VerificationError(f"blind signature {i}: {exc}") from None
        tokens.append(Token(item.token_input, sig))
    return tokens


def mint_token(private_key: rsa.RSAPrivateKey, challenge: bytes) -> Token:
    """The operator's direct minting: no blinding needed when signer and holder are one."""
    public_key = private_key.public_key()
    _require_token_key(public_key)
    token_input = make_token_input(sha256(challenge), token_key_id(public_key))
    return Token(token_input, private_key.sign(token_input, _PSS, hashes.SHA384()))


# --- HTTP authentication (RFC 9577) ---------------------------------------------------

_TOKEN_CHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# The quoted-string alternative is written as an unrolled loop: the plain
# "(?:[^"\\]|\\.)*" backtracks per character, 0.1 ms for a 472-character token.
_PARAM = re.compile(
    rf"({_TOKEN_CHARS})[ \t]*=[ \t]*(\"[^\"\\]*(?:\\.[^\"\\]*)*\"|{_TOKEN_CHARS})")
_SEPARATOR = re.compile(r"[ \t,]*")
_UNESCAPE = re.compile(r"\\(.)")
_SCHEME = re.compile(r"([^ \t]*)[ \t]*")


def _parse_params(text: str) -> dict[str, str]:
    """RFC 9110 §11.2 ``#auth-param``: names case-insensitive, values token or quoted-string."""
    params: dict[str, str] = {}
    pos = _SEPARATOR.match(text).end()
    while pos < len(text):
        match = _PARAM.match(text, pos)
        if match is None:
            raise TokenInvalid("PrivateToken header: malformed parameters")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = _UNESCAPE.sub(r"\1", value[1:-1])
        if name in params:
            raise TokenInvalid(f"PrivateToken header: duplicate parameter {name}")
        params[name] = value
        pos = match.end()
        after = _SEPARATOR.match(text, pos).end()
        if after < len(text) and "," not in text[pos:after]:
            raise TokenInvalid("PrivateToken header: parameters must be separated by commas")
        pos = after
    return params


def format_authorization(token_bytes: bytes) -> str:
    return f'{SCHEME} token="{b64url_encode(token_bytes)}"'


def parse_authorization(header_value: str | None) -> bytes | None:
    """The token bytes of an ``Authorization: PrivateToken`` header.

    None means the client offered no token (``TOKEN_REQUIRED``); a PrivateToken
    header that is malformed is ``TokenInvalid``, so the client learns its
    token, not its payment, was the problem.
    """
    if header_value is None:
        return None
    match = _SCHEME.match(header_value.strip())
    if match.group(1).lower() != SCHEME.lower():
        return None
    params = _parse_params(header_value.strip()[match.end():])
    if "token" not in params:
        raise TokenInvalid("PrivateToken header has no token parameter")
    return b64url_decode(params["token"], "token", error=TokenInvalid)


def format_www_authenticate(challenge: bytes, spki: bytes) -> str:
    return (f'{SCHEME} challenge="{b64url_encode(challenge)}", '
            f'token-key="{b64url_encode(spki)}"')
