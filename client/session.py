"""One keyserver, as the client works with it (§7.5, §10.3, §11.3): the
fetch -> verify -> persist loop every command runs, shaped like python-tuf's
ngclient ``Updater``: ``transport`` moves and parses, ``trust`` decides, ``store``
keeps only what verified.

A ``ServerSession`` checks the server's capabilities when they arrive (named
for this server and signed by a key they list: a bad one stops a command before
it does anything) and, once per sync, against the key the chain says is the
server's (§11.3). Everything that acts on capabilities (limits, prices,
repository URIs, token keys) takes them from here.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection, Iterable, Iterator, Mapping, Sequence

from .clock import now_ms
from .keyring import Keyring, server_keyring
from .lookup import fetch_bundles, lookup, server_record
from .monitor import check_own_identities
from .notaries import check_server_keys
from .protocol.encoding import b64encode, sha256
from .protocol.errors import ChainError, ClientError, ProtocolError, VerificationError
from .protocol.checkpoint import Checkpoint, Note, parse_note
from .protocol.hashchain import ENTRY_SIZE, ZERO_HASH, verify_entries
from .protocol.merkle import CompactTree
from .protocol.note import VerifierKey
from .protocol.identity import server_identity
from .protocol.uidrules import Limits
from .protocol.urls import URLError, split_url
from .protocol.wire import Capabilities, Chunk, UIDMessageReply, parse_checkpoint_note
from .store.home import Home
from .store.localchain import LocalChain
from .store.search import ChainSearch
from .transport.api import KeyserverAPI
from .transport.fetcher import Fetcher
from .trust.bundles import bundle_of, choose_bundles
from .trust.chainstate import ChainState, check_expected, check_head
from .trust.checkpoints import check_checkpoint, check_extends, check_leaf, check_root
from .trust.evidence import BrokenHistory, ServerCheating
from .trust.history import Found, LookupResult, ServerRecord, open_reply
from .trust.keyring import (ServerKey, check_capabilities, check_reply_listed,
                            check_reply_signature, check_reply_signatures, check_self_signed)
from .trust.monitor import Alert
from .trust.ordering import RepliesOutOfOrder, check_ordered
from .trust.serverpolicy import (TOKEN_KEY_CHANGES_WARN, TOKEN_KEY_CHANGES_WINDOW_MS,
                                 ChainPolicy, check_capabilities_policy, token_key_refusal)
from .trust.witnesses import Cosigned, check_cosigners, check_entry_times
from .witnesses import NO_WITNESS

if TYPE_CHECKING:
    # Tokens need RSA (cryptography, slow to import): only commands that pay load it.
    from .store.wallet import Wallet


@dataclass(frozen=True)
class Witnessing:
    """How far the log of a server whose witnesses the user requires is trusted
    (§8.1): up to the largest checkpoint that ``quorum`` of them cosigned, as
    verified here (``cosigned``; None: none yet, nothing is trusted)."""

    quorum: int
    cosigned: Cosigned | None

    @property
    def tree_size(self) -> int:
        return self.cosigned.tree_size if self.cosigned else 0

    @property
    def witnesses(self) -> list[str]:
        """The witnesses whose cosignatures the trusted tree rests on."""
        return sorted(self.cosigned.cosigners) if self.cosigned else []


@dataclass(frozen=True)
class LightLookup:
    """``lookup --light``: an identity's latest message as the server answered it,
    proven in a checkpoint's tree that the log key signed (``log_key_from``: "chain"
    when the synced chain bound the key, "capabilities" when only the server's
    self-signed capabilities named it), and in the tree a quorum of witnesses
    cosigned when the user requires one (``witnessing``). Nothing proves that no
    later entry exists."""

    found: Found
    checkpoint: Checkpoint
    log_key_from: str
    witnessing: Witnessing | None


@dataclass(frozen=True)
class TrustedLookup:
    """A lookup on the log as far as it is trusted: the identity's history in the
    witnessed tree (``result``; the whole verified chain when no quorum is required),
    and its positions beyond it, not yet witnessed (``unwitnessed``)."""

    identity: str
    result: LookupResult | None
    unwitnessed: tuple[int, ...]
    witnessing: Witnessing | None

    def pending(self) -> str | None:
        """What of the identity is not yet witnessed, in words (None: nothing)."""
        if not self.unwitnessed or self.witnessing is None:
            return None
        positions = ", ".join(map(str, self.unwitnessed))
        return (f"{self.identity} has {len(self.unwitnessed)} entries not yet witnessed "
                f"(position {positions}): not yet cosigned by {self.witnessing.quorum} "
                f"witness(es), the log is witnessed up to size {self.witnessing.tree_size}")


class TokenKeyRefused(ClientError):
    """No token key of the server may be bought with now (§10.4); the message says why."""


class NotYetWitnessed(ClientError):
    """A light lookup's entry lies beyond the tree a quorum of witnesses cosigned."""


def download_chain(api: KeyserverAPI, state: ChainState, *, chunk_size: int = 10000,
                   use_msgpack: bool = True) -> Iterator[list[bytes]]:
    """Fetch and verify the chain from ``state.length`` to the head, chunk by chunk,
    yielding each verified chunk's entries (the caller persists them).

    It stops at the first short chunk that reaches its ``head_pos``: only short
    chunks come from the head, whereas a complete chunk may come from a cache with an
    older ``head_pos``. (A short chunk below its ``head_pos`` met an append between
    two reads of the server: the next request gets the rest.)

    From the second complete chunk on, while a chunk is verified, the next one is
    already being fetched (the network wait and the hashing overlap), so a long chain
    downloads at the speed of verification. The fetching thread starts only after the
    first chunk was yielded: the caller may fork then (``sync_chain``'s indexer), and a
    process forked while another thread holds a lock (the import lock, a connection's)
    can hang on it."""
    def fetch(start: int) -> Chunk:
        return api.fetch_hashchain(start, chunk_size, use_msgpack=use_msgpack)

    executor = None
    pending = None   # the prefetched chunk at state.length
    try:
        while True:
            chunk = pending.result() if pending is not None else fetch(state.length)
            pending = None
            complete = len(chunk.entries) == chunk_size
            if complete and executor is not None:
                pending = executor.submit(fetch, state.length + chunk_size)
            entries = state.accept(chunk)
            if entries:
                yield entries
            if len(entries) < chunk_size and chunk.head_pos < state.length:
                return
            if not entries:
                raise ChainError(f"the server names head {chunk.head_pos} but serves no "
                                 f"entry at {state.length}", position=state.length)
            if complete and executor is None:   # only a long download needs the thread
                from concurrent.futures import ThreadPoolExecutor

                executor = ThreadPoolExecutor(1)
                pending = executor.submit(fetch, state.length)
    finally:
        if executor is not None:
            # Not waiting: after a failure or an interrupt, a prefetch in flight ends
            # on its own (no prefetch is in flight after a complete download).
            executor.shutdown(wait=False, cancel_futures=True)


def sync_chain(api: KeyserverAPI, chain: LocalChain, *, chunk_size: int = 10000,
               progress: Callable[[int], None] = lambda n: None,
               expect: Mapping[int, bytes] | None = None,
               search: ChainSearch | None = None, index: Sequence[str] = ()) -> int:
    """Download and verify everything after the local head; return how many new
    entries. Nothing of a sync that fails is kept (§7.5: a chain that does not
    verify is rejected whole): not a bad chunk, not the good chunks before it,
    not a chain whose entry at a position in ``expect`` (replies we hold) differs,
    nor one that the server's current head contradicts.

    The identities in ``index`` are searched in the new entries on the way when
    the download is long: a second process computes k1 and scans each chunk
    while this one verifies the next (a later search then has nothing left)."""
    state = chain.state()
    start = chain.length
    received_ts = now_ms()   # §7.3 F: the entries of this sync arrive at or after it
    indexer = None
    written = chain.state()   # the verified entries on disk so far
    try:
        with chain.appending() as write:
            for entries in download_chain(api, state, chunk_size=chunk_size):
                block = b"".join(entries)
                write(block)
                written = ChainState(state.length, state.last_hash)
                if indexer is None and search is not None and index and \
                        len(entries) == chunk_size:
                    indexer = search.indexer(start, index)
                if indexer is not None:
                    indexer.add(block, state.length - len(entries))
                progress(len(entries))
        check_expected(expect or {}, start, state.length, chain.read_entry)
        check_head(api.fetch_head(), state.length, chain.read_entry)
    except KeyboardInterrupt:
        # Stopped, not refused: what verified so far is kept for the next sync.
        chain.keep_verified(written, received_ts, expect or {})
        if indexer is not None:
            indexer.close()
        raise
    except BaseException:
        chain.discard()
        if indexer is not None:
            indexer.close()
        raise
    chain.commit(state, received_ts)
    if search is not None and indexer is not None:
        fresh, matches = indexer.results()
        search.record_scans(start, fresh, matches, indexer.identities)
    return chain.length - start


def add_server(home: Home, url: str, move: bool = False,
               fetcher: Fetcher | None = None,
               notice: Callable[[str], None] = lambda message: None) -> str:
    """Remember the keyserver at ``url`` (reached through ``fetcher``, by default an
    ``HTTPFetcher``); return its name. Its capabilities must be signed by a key
    they list (the chain tells later whether it is the server's), and the keys its
    key document shows must be those the trusted notaries saw (§11.4: first
    contact; ``notice`` tells when no notary is configured)."""
    try:
        split_url(url)
    except URLError as exc:
        raise ClientError(str(exc)) from None
    api = KeyserverAPI(url, fetcher)
    capabilities = api.capabilities()
    check_self_signed(capabilities)
    name = capabilities.server_name
    now = now_ms()
    document = api.key_document(name)
    check_server_keys(home, name, document, api.fetcher, notice, now)
    home.remember_server(name, api.base_url, now, move)
    home.record_key_document(name, document, now)
    return name


def witnessing(home: Home, server: str) -> Witnessing | None:
    """How far the log of ``server`` is trusted, as last verified in ``home``
    (§8.1); None when the user requires no witness of it (the whole verified chain
    is)."""
    quorum = home.quorum(server)
    if not quorum:
        return None
    note = home.witnessed(server)
    cosigned = (check_cosigners(parse_note(note), home.witnesses(server), now_ms())
                if note is not None else None)
    return Witnessing(quorum, cosigned)


def _runs(positions: Iterable[int]) -> list[tuple[int, int]]:
    """``(first, last)`` of each run of consecutive ``positions`` (the bundles of a
    batch), in order."""
    runs: list[list[int]] = []
    for pos in sorted(set(positions)):
        if runs and runs[-1][1] == pos - 1:
            runs[-1][1] = pos
        else:
            runs.append([pos, pos])
    return [(first, last) for first, last in runs]


class ServerSession:
    """The keyserver ``server`` at ``url`` (reached through ``fetcher``, by default
    an ``HTTPFetcher``), its verified chain in ``home``; ``rng`` picks the decoy
    bundles (§5.1), by default from the system's randomness."""

    def __init__(self, home: Home, server: str, url: str,
                 progress: Callable[[str], None] = lambda step: None,
                 fetcher: Fetcher | None = None, rng: random.Random | None = None,
                 notice: Callable[[str], None] = lambda message: None):
        self.home, self.server, self.progress, self.notice = home, server, progress, notice
        self.rng = rng or random.SystemRandom()
        #: Replies of this session by position, each naming the chain's entry (the
        #: head's partial bundle's too, which the home does not cache as complete).
        self._replies: dict[int, UIDMessageReply] = {}
        #: Those fetched but not yet held: their signatures wait for the chain's keys.
        self._unsigned: list[UIDMessageReply] = []
        self.api = KeyserverAPI(url, fetcher)
        self.chain = home.chain(server)
        self.search = ChainSearch(self.chain)
        self._capabilities: Capabilities | None = None
        #: Whether our identities were checked for entries we did not make (§7.3
        #: "Monitoring"): the caller then reports the home's unacknowledged alerts.
        self.monitored = False
        #: The server's signing keys and policy as the chain records them, after ``sync``.
        self.record: ServerRecord | None = None
        self._keyring: Keyring | None = None

    @property
    def keyring(self) -> Keyring:
        """Whether a server key was valid at a signed object's time (§11.3): the
        server's key documents, from the home, the server, then the notaries."""
        if self._keyring is None:
            self._keyring = server_keyring(self.home, self.server, self.api,
                                           self.home.notaries())
        return self._keyring

    @property
    def capabilities(self) -> Capabilities:
        """The server's capabilities, fetched once, named for this server and signed
        by a key they list; after ``sync`` also by the chain's key."""
        if self._capabilities is None:
            capabilities = self.api.capabilities()
            if capabilities.server_name != self.server:
                raise VerificationError(f"{self.api.base_url} answers as another server"
                                        f" than {self.server}")
            check_self_signed(capabilities)
            self._capabilities = capabilities
        return self._capabilities

    @property
    def limits(self) -> Limits:
        """The capabilities' limits; after ``sync``, those the chain binds are
        checked to be the chain's (§7.3)."""
        return self.capabilities.limits

    @property
    def keys(self) -> list[ServerKey]:
        """The server's signing keys as the chain records them (none before ``sync``)."""
        return self.record.keys if self.record else []

    @property
    def policy(self) -> ChainPolicy:
        """The server's policy as the chain records it (found afresh if not yet)."""
        if self.record is None:
            self.track_keys()
        assert self.record is not None
        return self.record.policy

    def sync(self, progress: Callable[[int], None] = lambda n: None,
             expect: dict[int, bytes] | None = None) -> int:
        """Bring the chain up to date, find the server's keys on it and check the
        capabilities against them. A chain that contradicts a reply we hold (or the
        ``expect``ed entries) is refused whole (§7.5). Then our identities' new
        entries that we did not make (``expect`` holds ours being written) become
        alerts (``monitor``)."""
        self.capabilities    # first: a bad one stops the sync before it starts
        self.progress("syncing the chain")
        expected = {pos: reply.entry.hashchain_entry
                    for _, pos, reply in self.home.own_replies(self.server)}
        try:
            added = sync_chain(self.api, self.chain, progress=progress,
                               expect={**expected, **(expect or {})}, search=self.search,
                               index=[server_identity(self.server),
                                      *self.home.monitored(self.server)])
        except ChainError:
            self._rewrite_evidence()
            raise
        self.track_keys()
        self.corroborate_keys()
        check_capabilities(self.capabilities, self.server, self.keys, self.chain.length - 1,
                           self.keyring)
        check_capabilities_policy(self.capabilities, self.policy)
        self.check_log()
        self.check_witnesses(self.policy.current.log_vkey)
        self.monitor(expect or {})
        return added

    # --- the log (§8) -------------------------------------------------------------

    def check_log(self) -> Checkpoint | None:
        """After a sync: the server's newest checkpoint, signed by the log key the
        chain binds; its root the one of the verified chain's entries when the chain
        holds its whole tree; consistent with the last checkpoint verified here.
        None before the server made its first checkpoint."""
        self.progress("checking the log's newest checkpoint")
        note = self.api.fetch_checkpoint()
        if note is None:
            return None
        checkpoint = check_checkpoint(note, self.policy.current.log_vkey)
        with self._evidence():
            if checkpoint.tree_size <= self.chain.length:
                check_root(note, self._local_root(checkpoint.tree_size))
            self._advance_checkpoint(note)
        return checkpoint

    def _rewrite_evidence(self) -> None:
        """After the server served a chain that contradicts the verified one: if its log
        key also signed a checkpoint of that other history, that checkpoint and the one
        verified here prove the rewrite: both are kept and ``HistoryRewritten`` raised.
        The key is the one that verifies the checkpoint held here (the capabilities
        name it; the chain cannot be consulted, it is what is contradicted). Any
        other failure leaves the chain's own error to tell."""
        held = self.home.checkpoint(self.server)
        try:
            log_vkey = self.capabilities.log_vkey
            if held is None:
                return
            check_checkpoint(parse_note(held), log_vkey)
            note = self.api.fetch_checkpoint()
            if note is None:
                return
            check_checkpoint(note, log_vkey)
            with self._evidence():   # two signed notes first: they prove it on their own
                self._advance_checkpoint(note)
                if note.checkpoint.tree_size <= self.chain.length:
                    check_root(note, self._local_root(note.checkpoint.tree_size))
        except ServerCheating:
            raise
        except (ClientError, ProtocolError):
            return

    @property
    def witnessing(self) -> Witnessing | None:
        """How far the log is trusted, as last verified here (``witnessing``)."""
        return witnessing(self.home, self.server)

    def check_witnesses(self, log_vkey: VerifierKey) -> Witnessing | None:
        """With a quorum ``k`` of witnesses required (§8.1): the server's newest
        checkpoint with ``k`` cosignatures, signed by ``log_vkey``, counted only with
        ``k`` valid ones by distinct witnesses trusted here, its root the verified
        chain's when the chain holds its tree, consistent with the last checkpoint
        kept; the largest such is remembered. Without one, the user is told why and
        nothing more is trusted than before. With no witness required, the user is
        told once that split views go undetected."""
        quorum = self.home.quorum(self.server)
        if not quorum:
            if self.home.tell_unwitnessed(self.server, now_ms()):
                self.notice(NO_WITNESS.format(server=self.server))
            return None
        self.progress(f"checking the witnesses' cosignatures (quorum {quorum})")
        note = self.api.fetch_checkpoint(quorum=quorum)
        why = f"the server has no checkpoint with {quorum} cosignatures"
        if note is not None:
            check_checkpoint(note, log_vkey)
            cosigned = check_cosigners(note, self.home.witnesses(self.server), now_ms())
            for refused in cosigned.refused:
                self.notice(f"{self.server}: {refused}: not counted")
            if len(cosigned.cosigners) >= quorum:
                with self._evidence():
                    if cosigned.tree_size <= self.chain.length:
                        check_root(note, self._local_root(cosigned.tree_size))
                    self._advance_checkpoint(note)
                self.home.record_witnessed(self.server, cosigned.tree_size, note.text(),
                                           now_ms())
                return self.witnessing
            why = (f"its checkpoint of size {cosigned.tree_size} carries valid cosignatures"
                   f" by {len(cosigned.cosigners)} of the witnesses trusted here")
        witnessing = self.witnessing
        assert witnessing is not None
        self.notice(f"no checkpoint of {self.server} is cosigned by {quorum} of its witnesses"
                    f" yet ({why}): " + (
                        f"its log is trusted up to size {witnessing.tree_size}, as before"
                        if witnessing.cosigned else "nothing of its log is trusted yet"))
        return witnessing

    @contextlib.contextmanager
    def _evidence(self) -> Iterator[None]:
        """A server caught cheating inside: what proves it is kept in the home."""
        try:
            yield
        except ServerCheating as exc:
            self.home.record_evidence(self.server, str(exc), exc.replies, now_ms(), exc.notes)
            raise

    def _local_root(self, tree_size: int) -> bytes:
        """The Merkle root of the verified chain's first ``tree_size`` entries, from the
        compact tree the home keeps (only the entries since are hashed), which then
        grows to ``tree_size``."""
        size, hashes = self.home.merkle_tree(self.server)
        tree = CompactTree(size, hashes) if size <= tree_size else CompactTree()
        start = tree.size
        step = 65536
        for first in range(start, tree_size, step):
            block = self.chain.read(first, min(first + step, tree_size))
            for offset in range(0, len(block), ENTRY_SIZE):
                tree.append(block[offset:offset + ENTRY_SIZE])
        assert tree.size == tree_size
        if tree_size > size:
            self.home.record_merkle_tree(self.server, tree.size, tree.hashes)
        return tree.root()

    def _advance_checkpoint(self, note: Note) -> None:
        """``note`` (verified) must extend the last checkpoint verified here, as a
        consistency proof shows (a smaller one must be its prefix); the larger of the
        two is remembered. Two that do not are ``HistoryRewritten``."""
        held = self.home.checkpoint(self.server)
        old = parse_note(held) if held is not None else None
        if old is not None:
            first, second = sorted((old.checkpoint.tree_size, note.checkpoint.tree_size))
            hashes: tuple[bytes, ...] = ()
            if first not in (0, second):
                proof = self.api.fetch_consistency_proof(first, second)
                if (proof.first, proof.second) != (first, second):
                    raise VerificationError(f"asked for a consistency proof from {first} to "
                                            f"{second}, got one from {proof.first} to "
                                            f"{proof.second}")
                hashes = proof.hashes
            check_extends(old, note, hashes)
            if note.checkpoint.tree_size <= old.checkpoint.tree_size:
                return
        self.home.record_checkpoint(self.server, note.checkpoint.tree_size, note.text(),
                                    now_ms())

    def light_lookup(self, identity: str) -> LightLookup:
        """``identity``'s latest message without a sync (§12 ``GET /v1/users``): the
        server's reply, in the tree of a checkpoint the log key signed (the chain's
        log key if this home synced the chain, else the capabilities'), consistent with
        the last checkpoint verified here; the reply signed by the server (by the key
        the chain gives its position, else by a key the capabilities list) and its
        message decrypting with the UIDHash the entry gives. The server learns whom
        we look up, and nothing here proves that no later entry exists."""
        synced = self.chain.length > 0
        log_vkey = self.policy.current.log_vkey if synced else self.capabilities.log_vkey
        answer = self.api.lookup_user(identity)
        if answer.identity != identity:
            raise VerificationError(f"the server answered for {answer.identity}, not {identity}")
        head = answer.head
        if head.checkpoint is None:
            raise VerificationError(f"{self.server} has no checkpoint yet: try again later,"
                                    " or sync the whole chain")
        note = parse_checkpoint_note(head.checkpoint.encode())
        checkpoint = check_checkpoint(note, log_vkey)
        if (head.tree_size, head.root_hash) != (checkpoint.tree_size, checkpoint.root_hash):
            raise VerificationError("the head's tree size and root are not its checkpoint's")
        reply = answer.reply
        pos = reply.entry.hashchain_pos
        with self._evidence():
            self._advance_checkpoint(note)
        check_leaf(reply.entry.hashchain_entry, answer.leaf_proof, checkpoint, pos)
        if synced:
            if pos < self.chain.length and self.chain.entry(pos) != reply.entry.hashchain_entry:
                raise VerificationError(f"the reply names another entry at position {pos}"
                                        " than the verified chain")
            check_reply_signature(reply, self.server, self.keys, pos, self.keyring)
        else:
            check_reply_listed(reply, self.capabilities)
        found = open_reply(identity, self.server, reply)
        witnessing = self.check_witnesses(log_vkey)
        if witnessing is not None:
            if witnessing.cosigned is None or pos >= witnessing.tree_size:
                raise NotYetWitnessed(
                    f"{identity}'s latest entry (position {pos}) is not yet witnessed: no"
                    f" checkpoint containing it is cosigned by {witnessing.quorum} of the"
                    f" witnesses trusted here (the log is witnessed up to size "
                    f"{witnessing.tree_size}); try again later")
            cosigned = witnessing.cosigned
            check_leaf(reply.entry.hashchain_entry,
                       self.api.fetch_inclusion_proof(pos, cosigned.tree_size),
                       cosigned.note.checkpoint, pos)
            with self._evidence():
                check_entry_times([reply], cosigned)
        return LightLookup(found, checkpoint, "chain" if synced else "capabilities",
                           witnessing)

    def monitor(self, writing: Collection[int] = ()) -> list[Alert]:
        """Alert on our identities' entries that we did not make (§7.3 "Monitoring"),
        on the chain as verified so far; return the new alerts."""
        alerts = check_own_identities(self, writing)
        self.monitored = True
        return alerts

    def track_keys(self) -> list[ServerKey]:
        """Find the server's signing keys and policy on the verified chain (§4,
        §7.2, §11.2)."""
        self.progress(f"tracking {server_identity(self.server)} on the chain")
        self.record = server_record(self.replies, self.search, self.server, self.keyring)
        self._hold_signed()
        return self.keys

    def corroborate_keys(self) -> None:
        """On the first sync and whenever the chain gives the server a key not yet
        corroborated (§11.4: every key change), have the trusted notaries confirm the
        keys the server shows us; a notary that disagrees fails the command."""
        current = self.keys[-1].pubkey
        count = self.home.corroborated(self.server, current)
        if count is not None and (count > 0 or not self.home.notaries()):
            return
        self.progress("corroborating the server's keys with the notaries")
        document = self.keyring.fresh_document(self.keys)
        if current not in document.verify_keys.values():
            raise VerificationError(f"the key document of {self.server} does not name the "
                                    "signing key the chain gives it as current")
        check_server_keys(self.home, self.server, document, self.api.fetcher, self.notice,
                          now_ms())

    def hold(self, replies: Sequence[UIDMessageReply]) -> None:
        """Keep verified replies of this server, once their times are in order with
        each other and with every reply held before (§7.3 "ordered"). A decrease
        proves the server cheats: both replies are kept as evidence in the home,
        and the command fails."""
        if not replies:
            return
        # Around each run of positions (a bundle, or neighbours): the held replies
        # between two runs cannot contradict a third.
        known = {(reply.entry.hashchain_pos, reply.entry.ts) for reply in replies}
        held = [reply for first, last in _runs(pos for pos, _ in known)
                for reply in self.home.held_around(self.server, first, last, known=known)]
        try:
            check_ordered([*held, *replies])
        except RepliesOutOfOrder as exc:
            self.home.record_evidence(self.server, str(exc), exc.replies, now_ms())
            raise
        self.home.hold_replies(self.server, replies)

    def replies(self, positions: Collection[int]) -> dict[int, UIDMessageReply]:
        """The server's reply for each of ``positions`` on the verified chain, from
        the home's cache of complete bundles or fetched in bundles with decoys
        (§5.1), so that the server cannot tell whose replies they are. Every reply
        fetched is held (``hold``) once its signature checks (``_hold_signed``): it
        counts for the ordering rule and is the cache."""
        wanted = set(positions) - self._replies.keys()
        if wanted:
            complete = self.home.complete_bundles(self.server)
            self._replies.update(self.home.held_at(
                self.server, [pos for pos in wanted if bundle_of(pos) in complete]))
            needed = {bundle_of(pos) for pos in wanted - self._replies.keys()}
            batch = choose_bundles(needed, complete, bundle_of(self.chain.length - 1), self.rng)
            if batch:
                self.progress(f"fetching {len(batch)} reply bundles ({len(needed)} needed)")
                # Signatures are checked here, in this thread, once all arrived: the
                # keyring may have to fetch a key document and keep it in the home.
                fetched = fetch_bundles(self.api, self.chain, batch)
                self._replies.update((reply.entry.hashchain_pos, reply) for reply in fetched)
                self._unsigned += fetched
                self._hold_signed()
        return {pos: self._replies[pos] for pos in positions}

    def _hold_signed(self) -> None:
        """Hold the fetched replies once the chain's keys are known and they are
        signed by them: only then may they count for the ordering rule, or serve as
        evidence against the server. A bad one fails the command, decoy or not."""
        if self.keys and self._unsigned:
            check_reply_signatures(self._unsigned, self.server, self.keys, self.keyring)
            self.hold(self._unsigned)
            self._unsigned = []

    def verify_chain(self) -> None:
        """Re-verify every link of the local chain from its first entry (§7.5): what
        the disk holds must still end in the hash recorded as verified."""
        self.progress(f"re-verifying {self.chain.length} entries")
        data = self.chain.read()
        entries = [data[i:i + ENTRY_SIZE] for i in range(0, len(data), ENTRY_SIZE)]
        if verify_entries(entries, ZERO_HASH) != self.chain.last_hash:
            raise VerificationError("the local chain does not end in the verified hash")

    def trusted_lookup(self, identity: str) -> TrustedLookup:
        """``lookup`` on the log as far as it is trusted: with a quorum of witnesses
        required, only ``identity``'s entries in the tree they cosigned count (those
        beyond are named, not used), and each reply of its history must be dated no
        later than the cosignatures allow (§7.3; else the server cheats: the reply and
        the cosigned note are kept as evidence, ``EntryAfterCosignature``)."""
        witnessing = self.witnessing
        if witnessing is None:
            return TrustedLookup(identity, self.lookup(identity), (), None)
        size = witnessing.tree_size
        result = self.lookup(identity, upto=size)
        if result is not None:
            assert witnessing.cosigned is not None   # size > 0
            with self._evidence():
                check_entry_times([found.reply for found in result.history],
                                  witnessing.cosigned)
        later = tuple(pos for pos, _ in self.search.search(identity) if pos >= size)
        return TrustedLookup(identity, result, later, witnessing)

    def lookup(self, identity: str, upto: int | None = None) -> LookupResult | None:
        """``identity`` on the chain (its entries before position ``upto`` only, if
        given), with the server keys the last ``sync`` found (found afresh if there
        was none). Its replies, like every reply ``replies`` returns, are held already
        (from the cache, or by ``_hold_signed``). A history whose signed replies break
        §4 proves the server cheats: they are kept as evidence in the home, and the
        command fails (``BrokenHistory``)."""
        # One pass over the chain finds both (the server's own entries give its keys),
        # and one batch of bundles fetches both's replies (§5.1).
        hits = self.search.search_many([server_identity(self.server), identity])
        self.replies([pos for found in hits.values() for pos, _ in found])
        if self.record is None:
            self.track_keys()
        try:
            return lookup(self.replies, self.search, self.server, identity, self.keyring,
                          self.record, upto)
        except BrokenHistory as exc:
            self.home.record_evidence(self.server, str(exc), exc.replies, now_ms())
            raise

    # --- payment (§10) ------------------------------------------------------------

    def price(self, operation: str) -> int:
        return self.capabilities.token_prices.get(operation, 1)

    @contextlib.contextmanager
    def payment(self, operation: str) -> Iterator[str | None]:
        """An ``Authorization`` value paying for ``operation`` with a wallet token
        (settled by how the call ends), or None when the server makes it free."""
        if not self.price(operation):
            yield None
            return
        with self.home.wallet() as wallet, \
                wallet.spend(self.server, self.spendable_keys()) as authorization:
            yield authorization

    def require_tokens(self, operation: str) -> None:
        """Fail before any work is done when the wallet cannot pay for ``operation``."""
        if self.price(operation):
            with self.home.wallet() as wallet:
                wallet.require(self.server, self.spendable_keys())

    def spendable_keys(self) -> set[bytes]:
        """The token keys to spend under (§10.4): listed on the chain now and, as far
        as the capabilities say, not expired."""
        now = now_ms()
        expired = {key.key_id for key in self.capabilities.token_keys if key.not_after_ts <= now}
        return set(self.policy.current.token_keys) - expired

    def token_key_warning(self) -> str | None:
        """§10.4: a server that changes its token keys often may be splitting buyers
        into small groups; say so (None when it does not)."""
        changes = self.policy.token_key_changes(now_ms() - TOKEN_KEY_CHANGES_WINDOW_MS)
        if changes <= TOKEN_KEY_CHANGES_WARN:
            return None
        return (f"{self.server} changed its token keys {changes} times in the last 30 days: "
                "tokens bought from a server that changes keys this often may be linkable "
                "to your voucher")

    def buy_tokens(self, wallet: Wallet, voucher: str, count: int) -> int:
        """Blind ``count`` fresh token inputs, have the server sign them against the
        voucher, unblind and verify, and store them in ``wallet``; return the
        voucher's remainder. The token key is the newest of the capabilities (checked
        against the chain: a sync first) that the chain has listed for at least 24
        hours (§10.4), so that every buyer signs with a key everyone could see."""
        from .protocol.tokens import (finalize_tokens, parse_spki, prepare_blinded_tokens,
                                      token_challenge)

        self.sync()
        keys = self.capabilities.token_keys
        if not keys:
            raise VerificationError(f"{self.server} publishes no token key")
        now = now_ms()
        refusals = {key.key_id: token_key_refusal(self.policy, key.key_id, key.not_after_ts, now)
                    for key in keys}
        usable = [key for key in keys if refusals[key.key_id] is None]
        if not usable:
            raise TokenKeyRefused(f"not buying from {self.server}: " + "; ".join(
                f"token key {b64encode(key_id)[:12]}...: {why}"
                for key_id, why in refusals.items()))
        newest = max(usable, key=lambda key: key.not_after_ts)
        if sha256(newest.spki) != newest.key_id:
            raise VerificationError(f"{self.server}: token key id does not match its key")
        public = parse_spki(newest.spki, error=VerificationError)
        pending = prepare_blinded_tokens(public, token_challenge(self.server), count)
        issued = self.api.issue_tokens(voucher, newest.key_id, [item.blinded for item in pending])
        tokens = finalize_tokens(public, pending, list(issued.blind_sigs))
        wallet.add(self.server, [token.to_bytes() for token in tokens])
        return issued.remaining
