"""The server's policy: every configuration value the decisions consult, built once
from the checked configuration in ``create_app`` (§4.2.1, §9, §10, §12 ``limits``).

Service functions take a ``Policy`` rather than reading the configuration, so one
place turns keys into values and a test can build a policy without an app.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from client.protocol.note import ALG_COSIGNATURE, VerifierKey, parse_verifier_key
from client.protocol.uidrules import Limits


@dataclass(frozen=True)
class KeyInitPolicy:
    """What the KeyInit add, fetch and flush rules consult (§9)."""

    repouris: tuple[str, ...]
    max_lifetime_ms: int
    max_per_request: int
    max_stored: int
    #: Fetches a minute per client address and per sigkeyhash (0: unlimited).
    fetch_rate_per_address: int
    fetch_rate_per_sigkeyhash: int


@dataclass(frozen=True)
class NotaryPolicy:
    """What the notary consults (§11.4)."""

    #: server name -> URL of its key document (``.../_matrix/key/v2/server``): the
    #: servers this notary answers for, besides itself.
    origins: Mapping[str, str]
    min_refetch_ms: int
    #: What one request may spend asking origins, in all.
    fetch_timeout_ms: int
    max_document_bytes: int


@dataclass(frozen=True)
class Witness:
    """A witness this log asks to cosign its checkpoints (§8.1)."""

    #: Its submission prefix: the request goes to ``<url>/add-checkpoint``.
    url: str
    vkey: VerifierKey


@dataclass(frozen=True)
class CosigningPolicy:
    """What the log consults when it asks its witnesses (§8.1)."""

    #: witness name -> the witness.
    witnesses: Mapping[str, Witness]
    timeout_ms: int
    #: The backoff after failures in a row: from ``retry_min_ms``, doubling, at most
    #: ``retry_max_ms``.
    retry_min_ms: int
    retry_max_ms: int


@dataclass(frozen=True)
class Policy:
    """The configuration as the decisions and the capabilities (§12) see it."""

    server_name: str
    base_url: str
    #: Where the log's tiles are served (§8): BASE_URL unless TILES_URL names a copy.
    tiles_url: str
    domains: tuple[str, ...]
    reserved: frozenset[str]
    allowed_mixaddresses: frozenset[str]
    #: The KeyInit repositories UIDMessages may name and capabilities list (§9): this
    #: server's own (``keyinits.repouris``), then those of other operators it vouches for.
    keyinitrepository_uris: tuple[str, ...]
    limits: Limits
    keyinits: KeyInitPolicy
    #: operation -> tokens it costs (0 or 1, §10).
    token_prices: Mapping[str, int]
    token_key_lifetime_ms: int
    max_tokens_per_issue: int
    default_chunk: int
    lookup_enabled: bool
    #: §11: how long a key document is valid; how long a rotation's overlap lasts.
    key_validity_ms: int
    key_rotation_overlap_ms: int
    #: §11.2: the own UIDMessage is renewed once less than this is left.
    own_renewal_margin_ms: int
    notary: NotaryPolicy
    #: §8.1: the logs this server witnesses, origin -> the verifier keys of the log.
    witness_logs: Mapping[str, tuple[VerifierKey, ...]]
    cosigning: CosigningPolicy


def from_config(config: Mapping[str, Any]) -> Policy:
    """The policy of a configuration ``config.check_config`` accepted."""
    # §9: without its own URIs the KeyInit repository is the server itself.
    own = tuple(config["KEYINIT_REPOSITORY_URIS"]) or (config["BASE_URL"],)
    return Policy(
        server_name=config["KEYSERVER_NAME"],
        base_url=config["BASE_URL"],
        tiles_url=config["TILES_URL"] or config["BASE_URL"],
        domains=tuple(config["DOMAINS"]),
        reserved=frozenset(config["RESERVED_LOCALPARTS"]),
        allowed_mixaddresses=frozenset(config["ALLOWED_MIXADDRESSES"]),
        keyinitrepository_uris=tuple(dict.fromkeys(own + tuple(config["ALLOWED_REPOURIS"]))),
        limits=Limits(
            max_uid_lifetime_ms=config["MAX_UID_LIFETIME"],
            reclaim_grace_ms=config["RECLAIM_GRACE"],
            lastentry_max_age_ms=config["LASTENTRY_MAX_AGE"], max_chunk=config["MAX_CHUNK"],
            max_keyinit_lifetime_ms=config["MAX_KEYINIT_LIFETIME"],
            max_keyinits_per_identity=config["MAX_KEYINITS_PER_IDENTITY"],
            max_keyinits_per_request=config["MAX_KEYINITS_PER_REQUEST"],
            max_request_bytes=config["MAX_REQUEST_BYTES"]),
        keyinits=KeyInitPolicy(
            own, config["MAX_KEYINIT_LIFETIME"], config["MAX_KEYINITS_PER_REQUEST"],
            config["MAX_KEYINITS_PER_IDENTITY"], config["KEYINIT_FETCH_RATE_PER_ADDRESS"],
            config["KEYINIT_FETCH_RATE_PER_SIGKEYHASH"]),
        token_prices=MappingProxyType(dict(config["TOKEN_PRICES"])),
        token_key_lifetime_ms=config["TOKEN_KEY_LIFETIME"],
        max_tokens_per_issue=config["MAX_TOKENS_PER_ISSUE"],
        default_chunk=config["DEFAULT_CHUNK"],
        lookup_enabled=config["LOOKUP_ENABLED"],
        key_validity_ms=config["KEY_VALIDITY"],
        key_rotation_overlap_ms=config["KEY_ROTATION_OVERLAP"],
        own_renewal_margin_ms=config["OWN_RENEWAL_MARGIN"],
        notary=NotaryPolicy(
            MappingProxyType({name: _document_url(name, base)
                              for name, base in config["NOTARY_ORIGINS"].items()}),
            config["NOTARY_MIN_REFETCH"], config["NOTARY_FETCH_TIMEOUT"],
            config["NOTARY_MAX_DOCUMENT_BYTES"]),
        witness_logs=MappingProxyType({
            origin: tuple(parse_verifier_key(key) for key in keys)
            for origin, keys in config["WITNESS_LOGS"].items()}),
        cosigning=CosigningPolicy(
            MappingProxyType({name: Witness(witness["url"].rstrip("/"), parse_verifier_key(
                witness["vkey"], alg=ALG_COSIGNATURE)) for name, witness
                in config["WITNESSES"].items()}),
            config["WITNESS_TIMEOUT"], config["WITNESS_RETRY_MIN"],
            config["WITNESS_RETRY_MAX"]),
    )


def _document_url(server_name: str, base_url: str | None) -> str:
    """Where an origin serves its key document (§11.4: else ``https://<server_name>``)."""
    return (base_url or f"https://{server_name}").rstrip("/") + "/_matrix/key/v2/server"
