"""The keyserver's HTTP API (§12) as methods named after the spec's operations.

Each method returns the answer parsed once, here, into its ``protocol.wire``
object (or raises): callers never look into an answer's dict. Parsed is not
verified: signatures and chain positions are for ``trust``."""

from __future__ import annotations

import json

from . import fetcher as fetching
from .fetcher import Fetcher, Request
from ..protocol.encoding import b64encode, b64url_encode, require_int
from ..protocol.errors import BY_ERRCODE, ProtocolError, TransportError
from ..protocol.keys import KeyEntry
from ..protocol.serverkeys import KeyDocument, parse_key_document
from ..protocol.checkpoint import Note
from ..protocol.wire import (BUNDLE_SIZE, CHECKPOINT_BYTES, MSGPACK, Capabilities, Chunk,
                             ConsistencyProof, Head, InclusionProof, IssuedTokens,
                             KeyInitReceipt, KeyInitStatus, ReplyBundle, UIDMessageReply,
                             UserLookup, parse_capabilities, parse_checkpoint_note, parse_chunk,
                             parse_consistency_proof, parse_head, parse_inclusion_proof,
                             parse_issued_tokens, parse_keyinit_receipt, parse_keyinit_status,
                             parse_reply_bundle, parse_uid_message_reply, parse_user_lookup)

#: Per-entry size bound of a chunk answer (base64 plus quotes and comma).
_ENTRY_WIRE_BYTES = 210
MAX_JSON_BYTES = 4 * 1024 * 1024
#: Per-reply size bound of a bundle answer: the largest UIDMessage the server takes
#: (16 KiB, ``keyserver.http.users.UID_BODY_BYTES``) encrypted, in base64, with the rest.
_REPLY_WIRE_BYTES = 24 * 1024
#: A key document (§11.1) holds a few keys: far less than this.
KEY_DOCUMENT_BYTES = 64 * 1024


class NotJSON(TransportError):
    """An answer that is not the JSON object the API promises."""


class NotAKeyserver(TransportError):
    """The URL answers, but not as a keyserver does."""


class KeyserverAPI:
    """One keyserver, reached at ``base_url`` through ``fetcher`` (by default
    ``fetcher.default_fetcher()``, an ``HTTPFetcher``)."""

    def __init__(self, base_url: str, fetcher: Fetcher | None = None):
        self.base_url = base_url.rstrip("/")
        self.fetcher = fetcher or fetching.default_fetcher()

    def _json(self, method: str, path: str, body: dict | None = None,
              headers: dict[str, str] | None = None, max_length: int = MAX_JSON_BYTES) -> dict:
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        response = self.fetcher.fetch(Request(method, self.base_url + path, headers, data),
                                      max_length)
        try:
            obj = json.loads(response.body)
        except (ValueError, RecursionError) as exc:   # nested too deeply to parse
            raise NotJSON(f"{path}: answer is not JSON") from exc
        if not isinstance(obj, dict):
            raise NotJSON(f"{path}: answer is not a JSON object")
        return obj

    def _get_json(self, path: str, max_length: int = MAX_JSON_BYTES) -> dict:
        return self._json("GET", path, max_length=max_length)

    def capabilities(self) -> Capabilities:
        """KeyRepository.Capabilities (signature checked by ``trust.keyring``). A
        server that answers anything but JSON there, or an error without an errcode
        (a web page's 404), is no keyserver."""
        try:
            answer = self._get_json("/v1/capabilities")
        except ProtocolError as exc:
            if exc.errcode in BY_ERRCODE:
                raise
            raise NotAKeyserver(f"{self.base_url} is not a keyserver (no signed capabilities"
                                f" at /v1/capabilities: HTTP {exc.status})") from None
        except NotJSON:
            raise NotAKeyserver(f"{self.base_url} is not a keyserver (no signed capabilities"
                                " at /v1/capabilities)") from None
        return parse_capabilities(answer)

    def key_document(self, server_name: str) -> KeyDocument:
        """§11.1 ``GET /_matrix/key/v2/server``: the server's key document, for
        ``server_name`` and self-signed (whether its keys are the chain's is for
        ``trust.keydocs``)."""
        return parse_key_document(self._get_json("/_matrix/key/v2/server", KEY_DOCUMENT_BYTES),
                                  server_name)

    def fetch_hashchain(self, start: int, count: int, *, use_msgpack: bool = True) -> Chunk:
        """KeyHashchain.FetchHashChain: entries ``start..start+count-1`` (fewer at the head)."""
        accept = MSGPACK if use_msgpack else "application/json"
        response = self.fetcher.fetch(
            Request("GET", f"{self.base_url}/v1/hashchain?start={start}&count={count}",
                    {"Accept": accept}),
            count * _ENTRY_WIRE_BYTES + 1024)
        return parse_chunk(response.body, response.content_type)

    def fetch_head(self) -> Head:
        """KeyHashchain.FetchLastHashChain."""
        return parse_head(self._get_json("/v1/hashchain/head"))

    def fetch_checkpoint(self, quorum: int | None = None) -> Note | None:
        """§8 ``GET /v1/hashchain/checkpoint``: the newest checkpoint note with its
        cosignatures (not yet verified), or None before the server made its first;
        with ``quorum``, the newest carrying at least that many cosignatures (§8.1),
        or None when none does."""
        query = "" if quorum is None else f"?quorum={quorum}"
        try:
            response = self.fetcher.fetch(
                Request("GET", f"{self.base_url}/v1/hashchain/checkpoint{query}",
                        {"Accept": "text/plain"}), CHECKPOINT_BYTES)
        except ProtocolError as exc:
            if exc.status == 404:
                return None
            raise
        return parse_checkpoint_note(response.body)

    def fetch_inclusion_proof(self, index: int, tree_size: int) -> InclusionProof:
        """§12: that leaf ``index`` is in the tree of ``tree_size`` (not yet checked)."""
        return parse_inclusion_proof(self._get_json(
            f"/v1/hashchain/proof/inclusion?index={index}&tree_size={tree_size}"))

    def fetch_consistency_proof(self, first: int, second: int) -> ConsistencyProof:
        """§12: that the tree of ``second`` extends the one of ``first`` (not yet checked)."""
        return parse_consistency_proof(self._get_json(
            f"/v1/hashchain/proof/consistency?first={first}&second={second}"))

    def lookup_user(self, identity: str) -> UserLookup:
        """§12 ``GET /v1/users/<identity>``: the latest reply with its inclusion proof
        and the head's checkpoint (nothing verified). The server learns whom we look up."""
        return parse_user_lookup(self._get_json(f"/v1/users/{identity}"))

    def fetch_bundle(self, bundle: int, *, use_msgpack: bool = True) -> ReplyBundle:
        """§5.1: the replies of positions ``256 * bundle ..`` (not yet verified)."""
        accept = MSGPACK if use_msgpack else "application/json"
        response = self.fetcher.fetch(
            Request("GET", f"{self.base_url}/v1/uids/bundle/{bundle}", {"Accept": accept}),
            BUNDLE_SIZE * _REPLY_WIRE_BYTES)
        return parse_reply_bundle(response.body, response.content_type, bundle)

    def _put_uid(self, message: dict, authorization: str | None) -> UIDMessageReply:
        identity = message["content"]["identity"]
        headers = {"Authorization": authorization} if authorization else {}
        return parse_uid_message_reply(
            self._json("PUT", f"/v1/users/{identity}", {"uid_message": message}, headers))

    def create_uid(self, message: dict, authorization: str | None = None) -> UIDMessageReply:
        """KeyRepository.CreateUID: the signed UIDMessageReply (not yet verified)."""
        return self._put_uid(message, authorization)

    def update_uid(self, message: dict, authorization: str | None = None) -> UIDMessageReply:
        """KeyRepository.UpdateUID: the signed UIDMessageReply (not yet verified)."""
        return self._put_uid(message, authorization)

    def add_keyinit(self, sigkey: KeyEntry, keyinits: list[dict],
                    authorization: str | None = None) -> KeyInitReceipt:
        """KeyInitRepository.AddKeyInit: the signed receipt (not yet verified)."""
        headers = {"Authorization": authorization} if authorization else {}
        return parse_keyinit_receipt(self._json(
            "POST", "/v1/keyinits", {"sigkey": sigkey.to_json(), "keyinits": keyinits}, headers))

    def fetch_keyinit(self, sigkeyhash: bytes) -> dict:
        """KeyInitRepository.FetchKeyInit: one KeyInit (consumed; not yet verified:
        ``protocol.keyinit.open_keyinit`` parses and verifies it in one step)."""
        path = f"/v1/keyinits/{b64url_encode(sigkeyhash)}/fetch"
        return _member(self._json("POST", path), "keyinit", path)

    def flush_keyinit(self, sigkeyhash: bytes, body: dict) -> int:
        """KeyInitRepository.FlushKeyInit with a signed ``{"ts", "signature"}`` body;
        returns how many KeyInits were deleted."""
        path = f"/v1/keyinits/{b64url_encode(sigkeyhash)}/flush"
        return require_int(_member(self._json("POST", path, body), "flushed", path),
                           f"{path}: flushed", error=TransportError)

    def keyinit_status(self, sigkeyhash: bytes, body: dict) -> KeyInitStatus:
        """How many KeyInits the owner has left, with a signed ``{"ts", "signature"}``
        body (our extension of §9, docs/decisions.md)."""
        return parse_keyinit_status(
            self._json("POST", f"/v1/keyinits/{b64url_encode(sigkeyhash)}/status", body))

    def issue_tokens(self, voucher: str, token_key_id: bytes,
                     blinded: list[bytes]) -> IssuedTokens:
        """Exchange a voucher for blind signatures (§10.3)."""
        return parse_issued_tokens(self._json("POST", "/v1/tokens/issue", {
            "voucher": voucher, "token_key_id": b64encode(token_key_id),
            "blinded": [b64encode(item) for item in blinded]}))


def _member(answer: dict, name: str, path: str):
    try:
        return answer[name]
    except KeyError:
        raise TransportError(f"{path}: answer has no {name!r}") from None
