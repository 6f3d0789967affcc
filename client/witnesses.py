"""The witnesses the user trusts for each keyserver (§8.1), as ``keyclient witness``
configures them: a witness's name and cosignature verifier key (as ``keyserver
witness key`` prints it, ``<name>+<hex key_id>+<b64(0x04 || pubkey)>``), and per
server the quorum, how many of them must have cosigned a tree before the client
trusts it. The checks themselves are ``trust.witnesses``; the session applies them.
"""

from __future__ import annotations

from .protocol.errors import ClientError, InvalidMessage
from .protocol.note import ALG_COSIGNATURE, ALG_ED25519, VerifierKey, parse_verifier_key

#: What the user is told, once per server, when no witness guards it.
NO_WITNESS = ("no witness is configured for {server}: a split view (the server showing you"
              " a log other than the one others see) cannot be detected; add one with"
              " 'keyclient witness add NAME KEY --server {server}'")
#: Why a command trusts only part of a log, said whenever newer entries exist.
NOT_YET_WITNESSED = ("{count} newer entries of {server} are not yet cosigned by {quorum}"
                     " witness(es); showing the log up to size {size}")


def parse_witness_key(name: str, text: str) -> VerifierKey:
    """``text``, a witness's cosignature verifier key named ``name``; a log's key
    (type 0x01), a key hash that does not match or another name is a ``ClientError``
    that says which."""
    try:
        key = parse_verifier_key(text, "witness key", ClientError, alg=ALG_COSIGNATURE)
    except ClientError as exc:
        try:
            parse_verifier_key(text, alg=ALG_ED25519)
        except InvalidMessage:
            raise exc from None
        raise ClientError("witness key: this is a log's checkpoint key (type 0x01), not a"
                          " witness's cosignature key (type 0x04, as 'keyserver witness"
                          " key' prints it)") from None
    if key.name != name:
        raise ClientError(f"witness key: the key is named {key.name!r}, not {name!r}")
    return key
