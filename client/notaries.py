"""Corroborating a keyserver's keys with the notaries the user trusts (§11.4).

A server could show each client keys of its own (a split view): a client that
meets a server, or sees it change keys on the chain, asks every trusted notary
which keys the server showed it, and refuses on any disagreement, showing both
documents. Unlike the keyring's sources, which stand in for each other, every
notary must agree: one that cannot answer leaves the keys uncorroborated, and the
command fails (the next one asks again). With no notary configured the user is
told so once per server key, plainly, and the command goes on.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

from .protocol.errors import ClientError, ProtocolError, VerificationError
from .protocol.keyquery import Notary
from .protocol.serverkeys import KeyDocument
from .transport.fetcher import Fetcher
from .transport.notary import NotaryAPI
from .trust.keydocs import NotaryDisagreement, disagreement, document_keys

#: What the user is told when no notary can vouch for a server's keys.
NO_NOTARY = ("no notary is configured: the keys of {server} are taken on the server's own "
             "word (add one with 'keyclient notary add' to have them corroborated)")


def corroborate(server_name: str, own: KeyDocument, notaries: Sequence[Notary],
                fetcher: Fetcher | None, now_ms: int) -> int:
    """Ask every notary for ``server_name``'s keys (those of ``own``, the document the
    server showed us, valid at least until ``now_ms``) and return how many agreed:
    all of them, or this raises ``NotaryDisagreement`` showing both documents (a
    notary that fails to answer raises ``VerificationError``)."""
    key_ids = sorted(document_keys(own))
    for notary in notaries:
        try:
            documents = NotaryAPI(notary, fetcher).query(server_name, key_ids, now_ms)
        except (ProtocolError, ClientError) as exc:
            raise VerificationError(f"notary {notary.server_name} could not corroborate the "
                                    f"keys of {server_name}: {exc}") from None
        if not documents:
            raise NotaryDisagreement(
                f"notary {notary.server_name} knows no keys of {server_name}, which shows "
                f"this client:\n{show_document(own)}")
        theirs = max(documents, key=lambda document: document.valid_until_ts)
        why = disagreement(own, theirs)
        if why is not None:
            raise NotaryDisagreement(
                f"notary {notary.server_name} reports other keys of {server_name} than "
                f"{server_name} shows this client ({why}): one of them lies, perhaps "
                f"{server_name} shows different people different keys. Not trusting it.\n"
                f"{server_name} showed this client:\n{show_document(own)}\n"
                f"notary {notary.server_name} reports:\n{show_document(theirs)}")
    return len(notaries)


def show_document(document: KeyDocument) -> str:
    """A document as the user is shown it: its JSON as signed, indented, so that two
    can be compared line by line."""
    return json.dumps(document.raw, indent=2, sort_keys=True)


def check_server_keys(home, server_name: str, document: KeyDocument, fetcher: Fetcher | None,
                      notice: Callable[[str], None], now_ms: int) -> None:
    """Corroborate ``document`` (the server's own, fetched now) with the home's
    notaries unless done for all its keys; remember them as corroborated (by none,
    once the user was told that no notary is configured)."""
    notaries = home.notaries()
    counts = [home.corroborated(server_name, key) for key in document.pubkeys]
    if all(count is not None and (count > 0 or not notaries) for count in counts):
        return
    agreed = corroborate(server_name, document, notaries, fetcher, now_ms)
    if not agreed:
        notice(NO_NOTARY.format(server=server_name))
    home.record_corroborated(server_name, document.pubkeys, agreed, now_ms)
