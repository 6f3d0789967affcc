"""The objects a keyserver serves or signs, as frozen dataclasses with one
``format_x``/``parse_x`` pair each (§5, §7.3, §10.3, §11.3, §12).

``parse_x`` is the edge: it turns what arrived into a typed object once, strictly
(exact types, required members present, base64 canonical and of the right
length), and anything off is the error class the client has always raised for that
object: ``VerificationError`` for what a server signs or vouches for, and
``TransportError`` for a chunk (an answer that did not arrive whole). Unknown
members are tolerated and kept, so later revisions can add fields (§12, revision 2).

``format_x`` gives exactly the JSON object the server sends (before it signs),
so that both sides share one serialization. A signed object keeps the dict it was
parsed from (``raw``): its signature is checked over exactly what the server sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

import msgpack

from .checkpoint import Note, parse_note
from .encoding import MAX_INT, b64decode, b64encode
from .errors import InvalidIdentity, TransportError, VerificationError
from .hashchain import ENTRY_SIZE, HASH_SIZE
from .identity import check_server_name
from .note import ALG_COSIGNATURE, VerifierKey, format_verifier_key, parse_verifier_key
from .signedjson import signing_bytes
from .uidrules import Limits

MSGPACK = "application/msgpack"
#: UIDIndex, nonce and MAC come before any ciphertext (§5).
MIN_ENCRYPTED_SIZE = 32 + 24 + 16

T = TypeVar("T")


# --- strict members -------------------------------------------------------------------

class _Reader:
    """Members of one JSON object (``name``d in errors, if not by ``prefix``), each
    read once with its type; a failure names the member after ``prefix`` and raises
    ``error``."""

    def __init__(self, obj: Any, prefix: str, error: type[Exception], name: str = ""):
        self.prefix, self.error = prefix, error
        if not isinstance(obj, dict):
            raise error(f"{prefix}: {name + ': ' if name else ''}not a JSON object")
        self.obj = obj

    def fail(self, name: str, problem: str):
        raise self.error(f"{self.prefix}: {name}: {problem}")

    def get(self, name: str) -> Any:
        if name not in self.obj:
            self.fail(name, "missing")
        return self.obj[name]

    def int(self, name: str, minimum: int = 0) -> int:
        value = self.get(name)
        if type(value) is not int or not minimum <= value <= MAX_INT:
            self.fail(name, f"must be an integer in [{minimum}, 2^53-1]")
        return value

    def str(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            self.fail(name, "must be a string")
        return value

    def bytes(self, name: str, length: int | None = None, minimum: int = 1) -> bytes:
        data = b64decode(self.get(name), f"{self.prefix}: {name}", length=length,
                         error=self.error)
        if len(data) < minimum:
            self.fail(name, f"shorter than {minimum} bytes")
        return data

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(name, "must be a list of strings")
        return tuple(value)

    def object(self, name: str, *, named: bool = True) -> _Reader:
        """A member object; ``named=False`` names its members as if they were ours."""
        if named:
            return _Reader(self.get(name), f"{self.prefix}: {name}", self.error)
        return _Reader(self.get(name), self.prefix, self.error, name)

    def items(self, name: str, parse: Callable[[Any, str], T]) -> dict[str, T]:
        """An object whose values ``parse(value, key)`` reads."""
        value = self.get(name)
        if not isinstance(value, dict):
            self.fail(name, "not a JSON object")
        return {key: parse(item, f"{name}.{key}") for key, item in value.items()}

    def list(self, name: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
        value = self.get(name)
        if not isinstance(value, list):
            self.fail(name, "must be a list")
        return tuple(parse(item, f"{name}[{index}]") for index, item in enumerate(value))


# --- UIDMessageReply (§5) -----------------------------------------------------------

@dataclass(frozen=True)
class ReplyEntry:
    """The ``entry`` of a UIDMessageReply: what the server stored and where."""

    uid_message_encrypted: bytes
    hashchain_entry: bytes
    hashchain_pos: int
    ts: int


@dataclass(frozen=True)
class UIDMessageReply:
    """A server's signed promise that ``entry.hashchain_entry`` is at ``hashchain_pos``;
    ``raw`` is the object as sent, which the signatures cover."""

    entry: ReplyEntry
    signatures: Mapping[str, Mapping[str, str]]
    raw: dict = field(compare=False, repr=False)


def format_uid_message_reply(entry: ReplyEntry,
                             signatures: Mapping[str, Mapping[str, str]] | None = None) -> dict:
    """The reply the server signs (without ``signatures``) or serves (with them)."""
    reply: dict = {"entry": {"uid_message_encrypted": b64encode(entry.uid_message_encrypted),
                             "hashchain_entry": b64encode(entry.hashchain_entry),
                             "hashchain_pos": entry.hashchain_pos, "ts": entry.ts}}
    if signatures is not None:
        reply["signatures"] = {name: dict(sigs) for name, sigs in signatures.items()}
    return reply


def _signatures(reader: _Reader) -> dict[str, dict[str, str]]:
    def by_signer(value: Any, name: str) -> dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(sig, str)
                                                  for sig in value.values()):
            reader.fail(name, "must map key ids to signatures")
        return dict(value)

    return reader.items("signatures", by_signer)


def parse_uid_message_reply(obj: Any, *, what: str = "malformed reply") -> UIDMessageReply:
    """A UIDMessageReply, shape only (the caller checks its signature and entry against
    the chain); ``what`` starts the error message."""
    reader = _Reader(obj, what, VerificationError, "reply")
    entry = reader.object("entry", named=False)
    parsed = ReplyEntry(entry.bytes("uid_message_encrypted", minimum=MIN_ENCRYPTED_SIZE),
                        entry.bytes("hashchain_entry", ENTRY_SIZE),
                        entry.int("hashchain_pos"), entry.int("ts"))
    return UIDMessageReply(parsed, _signatures(reader), obj)


_REPLY_MEMBERS = frozenset({"entry", "signatures"})
_ENTRY_MEMBERS = frozenset({"uid_message_encrypted", "hashchain_entry", "hashchain_pos", "ts"})


def reply_signing_bytes(reply: UIDMessageReply) -> bytes:
    """What the server signed of ``reply``: the canonical JSON of ``raw`` without its
    ``signatures`` (``signedjson.signing_bytes``). A reply with exactly the members of
    §5 has it formatted directly, about ten times faster than the generic encoder (a
    fetched bundle holds hundreds): its two strings are canonical base64, as the
    parse checked, so nothing in them needs escaping, and its numbers are plain ints.
    Any other member (tolerated for later revisions) takes the generic way."""
    raw, entry = reply.raw, reply.raw.get("entry")
    if raw.keys() != _REPLY_MEMBERS or not isinstance(entry, dict) or \
            entry.keys() != _ENTRY_MEMBERS:
        return signing_bytes(raw)
    chain_entry, encrypted = entry["hashchain_entry"], entry["uid_message_encrypted"]
    return (f'{{"entry":{{"hashchain_entry":"{chain_entry}",'
            f'"hashchain_pos":{reply.entry.hashchain_pos:d},"ts":{reply.entry.ts:d},'
            f'"uid_message_encrypted":"{encrypted}"}}}}').encode("ascii")


# --- Reply bundles (§5.1) ----------------------------------------------------------

#: Positions per bundle: bundle ``B`` holds the replies of positions ``256B .. 256B+255``.
BUNDLE_SIZE = 256


@dataclass(frozen=True)
class ReplyBundle:
    """The replies of bundle ``bundle``, by position from ``bundle * BUNDLE_SIZE`` on
    without a gap (the head's bundle may be short)."""

    bundle: int
    replies: tuple[UIDMessageReply, ...]


def format_reply_bundle(bundle: ReplyBundle) -> dict:
    """The served map, in JSON or msgpack alike: each reply's values are the strings
    its signatures cover, so both encodings verify the same way."""
    return {"bundle": bundle.bundle,
            "replies": [format_uid_message_reply(reply.entry, reply.signatures)
                        for reply in bundle.replies]}


def parse_reply_bundle(body: bytes, content_type: str, bundle: int) -> ReplyBundle:
    """``GET /v1/uids/bundle/<bundle>`` in either encoding. An answer that does not
    decode is a ``TransportError``; one for another bundle, with a malformed reply
    or a missing position is the server's fault (``VerificationError``): a client
    that skipped the gap would take a server hiding a reply for an honest one."""
    try:
        if content_type == MSGPACK:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
        else:
            obj = json.loads(body)
    except Exception as exc:
        raise TransportError(f"reply bundle {bundle} is malformed: {exc}") from exc
    what = f"reply bundle {bundle} is malformed"
    reader = _Reader(obj, what, VerificationError, "answer")
    if reader.int("bundle") != bundle:
        reader.fail("bundle", f"is {obj['bundle']}, not the bundle asked for")
    replies = reader.list("replies", lambda value, name: parse_uid_message_reply(
        value, what=f"{what}: {name}"))
    if not 1 <= len(replies) <= BUNDLE_SIZE:
        reader.fail("replies", f"must hold 1 to {BUNDLE_SIZE} replies")
    for offset, reply in enumerate(replies):
        if reply.entry.hashchain_pos != bundle * BUNDLE_SIZE + offset:
            reader.fail(f"replies[{offset}]", f"is for position {reply.entry.hashchain_pos},"
                        f" not {bundle * BUNDLE_SIZE + offset}")
    return ReplyBundle(bundle, replies)


# --- The head (§12 FetchLastHashChain) ----------------------------------------------

@dataclass(frozen=True)
class Head:
    """The last entry of a chain; ``ts`` is None in capabilities' ``hashchain_head``,
    which carries only ``pos`` and ``entry``."""

    pos: int
    entry: bytes
    ts: int | None = None


def format_head(head: Head) -> dict:
    body: dict = {"pos": head.pos, "entry": b64encode(head.entry)}
    if head.ts is not None:
        body["ts"] = head.ts
    return body


def _head(reader: _Reader, with_ts: bool) -> Head:
    return Head(reader.int("pos"), reader.bytes("entry", ENTRY_SIZE),
                reader.int("ts") if with_ts else None)


def parse_head(obj: Any) -> Head:
    """``GET /v1/hashchain/head``: ``{"pos", "entry", "ts"}``."""
    return _head(_Reader(obj, "the server's head is malformed", VerificationError, "head"),
                 True)


@dataclass(frozen=True)
class LogHead:
    """``GET /v1/hashchain/head`` whole: the head, and the newest checkpoint's tree
    size, root hash and note (§8; all None before the first checkpoint)."""

    head: Head
    tree_size: int | None = None
    root_hash: bytes | None = None
    checkpoint: str | None = None


def format_log_head(log_head: LogHead) -> dict:
    root = log_head.root_hash
    return {**format_head(log_head.head), "tree_size": log_head.tree_size,
            "root_hash": None if root is None else b64encode(root),
            "checkpoint": log_head.checkpoint}


def parse_log_head(obj: Any) -> LogHead:
    """The head with its checkpoint members, each null or of its type."""
    reader = _Reader(obj, "the server's head is malformed", VerificationError, "head")
    head = _head(reader, True)
    if obj.get("tree_size") is None:
        return LogHead(head)
    return LogHead(head, reader.int("tree_size"), reader.bytes("root_hash", HASH_SIZE),
                   reader.str("checkpoint"))


# --- Checkpoints and proofs (§8, §12) ---------------------------------------------

#: A checkpoint note is three short lines and a few signature lines: far less.
CHECKPOINT_BYTES = 16 * 1024
#: Proofs have at most 64 hashes (a tree of up to 2^63 leaves; twice for consistency).
MAX_PROOF_HASHES = 128


def parse_checkpoint_note(body: bytes) -> Note:
    """``GET /v1/hashchain/checkpoint`` (``text/plain``): the note, parsed strictly
    (its signatures are for ``trust.checkpoints`` to verify)."""
    if len(body) > CHECKPOINT_BYTES:
        raise VerificationError("the checkpoint is too long")
    return parse_note(body)


@dataclass(frozen=True)
class InclusionProof:
    """That leaf ``leaf_index`` is in the tree of ``tree_size`` (RFC 9162 §2.1.3)."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ConsistencyProof:
    """That the tree of ``second`` leaves extends the one of ``first`` (RFC 9162 §2.1.4)."""

    first: int
    second: int
    hashes: tuple[bytes, ...]


def _hashes(reader: _Reader) -> tuple[bytes, ...]:
    hashes = reader.list("hashes", lambda item, name: b64decode(
        item, f"{reader.prefix}: {name}", length=HASH_SIZE, error=reader.error))
    if len(hashes) > MAX_PROOF_HASHES:
        reader.fail("hashes", f"more than {MAX_PROOF_HASHES}")
    return hashes


def parse_inclusion_proof(obj: Any, what: str = "the inclusion proof is malformed"
                          ) -> InclusionProof:
    """``/v1/hashchain/proof/inclusion``, and a lookup's ``leaf_proof``."""
    reader = _Reader(obj, what, VerificationError)
    return InclusionProof(reader.int("leaf_index"), reader.int("tree_size"), _hashes(reader))


def parse_consistency_proof(obj: Any) -> ConsistencyProof:
    """``/v1/hashchain/proof/consistency``."""
    reader = _Reader(obj, "the consistency proof is malformed", VerificationError)
    return ConsistencyProof(reader.int("first"), reader.int("second"), _hashes(reader))


@dataclass(frozen=True)
class UserLookup:
    """``GET /v1/users/<identity>``: the identity's latest reply, its inclusion proof
    in the newest checkpoint's tree (None while no checkpoint covers it), and the
    head with that checkpoint."""

    identity: str
    reply: UIDMessageReply
    leaf_proof: InclusionProof | None
    head: LogHead


def parse_user_lookup(obj: Any) -> UserLookup:
    reader = _Reader(obj, "the lookup answer is malformed", VerificationError)
    proof = reader.get("leaf_proof")
    return UserLookup(reader.str("identity"),
                      parse_uid_message_reply(reader.get("uid_message_reply")),
                      None if proof is None else parse_inclusion_proof(
                          proof, "the lookup's leaf_proof is malformed"),
                      parse_log_head(reader.get("head")))


# --- Chain chunks (§7.5, §12 FetchHashChain) ----------------------------------------

@dataclass(frozen=True)
class Chunk:
    """Entries ``first_pos..`` of a chain whose head was at ``head_pos`` when served."""

    first_pos: int
    head_pos: int
    entries: Sequence[bytes]


def format_chunk(chunk: Chunk, *, binary: bool) -> dict:
    """The answer's map: entries as bytes for msgpack (``binary``), else base64."""
    entries = list(chunk.entries) if binary else [b64encode(entry) for entry in chunk.entries]
    return {"first_pos": chunk.first_pos, "head_pos": chunk.head_pos, "entries": entries}


def _position(value: Any, what: str) -> int:
    if type(value) is not int or value < -1:
        raise TransportError(f"hashchain chunk: {what} is not a position")
    return value


def parse_chunk(body: bytes, content_type: str) -> Chunk:
    """Parse a ``/v1/hashchain`` answer in either encoding; malformed is ``TransportError``.

    Entries of a wrong length are kept for ``verify_entries``, which names their
    position."""
    try:
        if content_type == MSGPACK:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
            entries = obj["entries"]
            if not isinstance(entries, list) or not set(map(type, entries)) <= {bytes}:
                raise TransportError("hashchain chunk: entries must be binary")
        else:
            obj = json.loads(body)
            entries = [b64decode(e, "entry", error=TransportError) for e in obj["entries"]]
        return Chunk(_position(obj["first_pos"], "first_pos"),
                     _position(obj["head_pos"], "head_pos"), entries)
    except TransportError:
        raise
    except Exception as exc:
        raise TransportError(f"hashchain chunk is malformed: {exc}") from exc


# --- Capabilities (§12) -------------------------------------------------------------

@dataclass(frozen=True)
class TokenKeyInfo:
    """A token key the server issues under (§10, capabilities' ``token_keys``)."""

    key_id: bytes
    spki: bytes
    not_after_ts: int


@dataclass(frozen=True)
class Capabilities:
    """What a server is, offers and limits, signed at ``ts``; ``raw`` as sent."""

    server_name: str
    version: str
    methods: tuple[str, ...]
    domains: tuple[str, ...]
    keyrepository_uris: tuple[str, ...]
    keyinitrepository_uris: tuple[str, ...]
    hashchain_uris: tuple[str, ...]
    hashchain_head: Head
    sigpubkeys: Mapping[str, bytes]
    token_keys: tuple[TokenKeyInfo, ...]
    token_prices: Mapping[str, int]
    limits: Limits
    #: The key that signs the log's checkpoints (§8), as the chain binds it (§4).
    log_vkey: VerifierKey
    ts: int
    #: Revision 2 (§8): the newest checkpoint note (None before the first) and where
    #: the log's tiles are served (this server or a static copy). A server that sends
    #: no ``tiles_url`` (an older one) sends neither: both are then None.
    checkpoint: str | None = None
    tiles_url: str | None = None
    #: §8.1: on a server that witnesses other logs, its witness's verifier key (whose
    #: name is the witness's name); else None.
    witness: VerifierKey | None = None
    #: As parsed (the signature covers it); None for capabilities the server builds.
    raw: dict | None = field(default=None, compare=False, repr=False)


#: Capabilities' ``limits`` (§12), in the order the server lists them.
LIMIT_FIELDS = ("max_chunk", "max_uid_lifetime_ms", "reclaim_grace_ms", "lastentry_max_age_ms",
                "max_keyinit_lifetime_ms", "max_keyinits_per_identity",
                "max_keyinits_per_request", "max_request_bytes")


def format_limits(limits: Limits) -> dict:
    return {name: getattr(limits, name) for name in LIMIT_FIELDS}


def parse_limits(obj: Any, what: str) -> Limits:
    reader = _Reader(obj, what, VerificationError)
    return Limits(**{name: reader.int(name) for name in LIMIT_FIELDS})


def format_token_key(key: TokenKeyInfo) -> dict:
    return {"key_id": b64encode(key.key_id), "spki": b64encode(key.spki),
            "not_after_ts": key.not_after_ts}


def parse_token_key(obj: Any, what: str) -> TokenKeyInfo:
    reader = _Reader(obj, what, VerificationError)
    return TokenKeyInfo(reader.bytes("key_id", HASH_SIZE), reader.bytes("spki"),
                        reader.int("not_after_ts"))


def format_capabilities(capabilities: Capabilities) -> dict:
    """The capabilities the server signs (without ``signatures``)."""
    return {
        "server_name": capabilities.server_name,
        "version": capabilities.version,
        "methods": list(capabilities.methods),
        "domains": list(capabilities.domains),
        "keyrepository_uris": list(capabilities.keyrepository_uris),
        "keyinitrepository_uris": list(capabilities.keyinitrepository_uris),
        "hashchain_uris": list(capabilities.hashchain_uris),
        "hashchain_head": format_head(capabilities.hashchain_head),
        "sigpubkeys": {key_id: b64encode(key) for key_id, key in
                       capabilities.sigpubkeys.items()},
        "token_keys": [format_token_key(key) for key in capabilities.token_keys],
        "token_prices": dict(capabilities.token_prices),
        "limits": format_limits(capabilities.limits),
        "log_vkey": format_verifier_key(capabilities.log_vkey),
        "ts": capabilities.ts,
        **({} if capabilities.tiles_url is None else
           {"checkpoint": capabilities.checkpoint, "tiles_url": capabilities.tiles_url}),
        **({} if capabilities.witness is None else
           {"witness": format_witness(capabilities.witness)}),
    }


def format_witness(vkey: VerifierKey) -> dict:
    """Capabilities' ``witness`` (§8.1): ``{"name", "vkey"}``."""
    return {"name": vkey.name, "vkey": format_verifier_key(vkey)}


def parse_witness(obj: Any, what: str) -> VerifierKey:
    """Capabilities' ``witness``: a cosignature verifier key (type 0x04) and its name."""
    reader = _Reader(obj, what, VerificationError)
    name = reader.str("name")
    vkey = parse_verifier_key(reader.get("vkey"), f"{what}: vkey", VerificationError,
                              alg=ALG_COSIGNATURE)
    if vkey.name != name:
        reader.fail("name", f"{name!r} is not the name of its vkey ({vkey.name!r})")
    return vkey


def parse_capabilities(obj: Any) -> Capabilities:
    """Capabilities, shape only: whether their signer is the server is for the
    chain to tell (``trust.keyring``). The name must be a server name: it becomes
    a folder of the client's home, so it must never be a path."""
    reader = _Reader(obj, "malformed capabilities", VerificationError, "capabilities")
    name = reader.str("server_name")
    try:
        check_server_name(name)
    except InvalidIdentity as exc:
        raise VerificationError(f"capabilities name {name!r}, which is not a server name"
                                f" ({exc})") from None
    prefix = reader.prefix

    def sigpubkey(value: Any, what: str) -> bytes:
        return b64decode(value, f"{prefix}: {what}", length=32, error=VerificationError)

    def price(value: Any, what: str) -> int:
        if type(value) is not int or not 0 <= value <= MAX_INT:
            reader.fail(what, "must be a count")
        return value

    return Capabilities(
        name, reader.str("version"), reader.strings("methods"), reader.strings("domains"),
        reader.strings("keyrepository_uris"), reader.strings("keyinitrepository_uris"),
        reader.strings("hashchain_uris"), _head(reader.object("hashchain_head"), False),
        reader.items("sigpubkeys", sigpubkey),
        reader.list("token_keys", lambda value, what: parse_token_key(value, f"{prefix}: {what}")),
        reader.items("token_prices", price),
        parse_limits(reader.get("limits"), f"{prefix}: limits"),
        parse_verifier_key(reader.get("log_vkey"), f"{prefix}: log_vkey", VerificationError),
        reader.int("ts"), *_tiles_members(reader),
        witness=(parse_witness(reader.get("witness"), f"{prefix}: witness")
                 if "witness" in reader.obj else None), raw=obj)


def _tiles_members(reader: _Reader) -> tuple[str | None, str | None]:
    """``checkpoint`` (a note or null) and ``tiles_url``, both optional (§8, revision 2)."""
    if "tiles_url" not in reader.obj:
        return None, None
    checkpoint = reader.obj.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        reader.fail("checkpoint", "must be a checkpoint note or null")
    return checkpoint, reader.str("tiles_url")


# --- KeyInit receipt (§9, §11.3) ----------------------------------------------------

@dataclass(frozen=True)
class KeyInitReceipt:
    """The server's signed word that it stored a batch of KeyInits at ``ts``."""

    sigkeyhash: bytes
    keyinit_hashes: tuple[bytes, ...]
    ts: int
    #: As parsed (the signature covers it); None for a receipt the server builds.
    raw: dict | None = field(default=None, compare=False, repr=False)


def format_keyinit_receipt(receipt: KeyInitReceipt) -> dict:
    """The receipt the server signs (without ``signatures``)."""
    return {"sigkeyhash": b64encode(receipt.sigkeyhash),
            "keyinit_hashes": [b64encode(item) for item in receipt.keyinit_hashes],
            "ts": receipt.ts}


def parse_keyinit_receipt(obj: Any) -> KeyInitReceipt:
    reader = _Reader(obj, "malformed KeyInit receipt", VerificationError, "receipt")

    def digest(value: Any, what: str) -> bytes:
        return b64decode(value, f"{reader.prefix}: {what}", length=HASH_SIZE,
                         error=VerificationError)

    return KeyInitReceipt(reader.bytes("sigkeyhash", HASH_SIZE),
                          reader.list("keyinit_hashes", digest), reader.int("ts"), obj)


# --- Token issuance (§10.3) ---------------------------------------------------------

@dataclass(frozen=True)
class IssuedTokens:
    """Blind signatures for a voucher request, and what the voucher has left."""

    blind_sigs: tuple[bytes, ...]
    remaining: int


def format_issued_tokens(issued: IssuedTokens) -> dict:
    return {"blind_sigs": [b64encode(sig) for sig in issued.blind_sigs],
            "remaining": issued.remaining}


def parse_issued_tokens(obj: Any) -> IssuedTokens:
    reader = _Reader(obj, "malformed token issuance answer", VerificationError, "answer")

    def signature(value: Any, what: str) -> bytes:
        return b64decode(value, f"{reader.prefix}: {what}", error=VerificationError)

    return IssuedTokens(reader.list("blind_sigs", signature), reader.int("remaining"))


# --- KeyInit status (our extension of §9) ---------------------------------------------

@dataclass(frozen=True)
class KeyInitStatus:
    """What an owner has left in a repository: unexpired non-fallback KeyInits
    (``stored``), fallback ones, and the earliest expiry among them (None if none)."""

    stored: int
    fallback: int
    expires_first_ts: int | None


def format_keyinit_status(status: KeyInitStatus) -> dict:
    return {"stored": status.stored, "fallback": status.fallback,
            "expires_first_ts": status.expires_first_ts}


def parse_keyinit_status(obj: Any) -> KeyInitStatus:
    """An unsigned answer, so anything off is a ``TransportError``."""
    reader = _Reader(obj, "malformed KeyInit status answer", TransportError, "answer")
    expires = None if reader.get("expires_first_ts") is None else reader.int("expires_first_ts")
    return KeyInitStatus(reader.int("stored"), reader.int("fallback"), expires)
