"""``keyclient``: the user's command line over the client library.

Each command parses its options, calls the library and echoes; the protocol's
and the client's exceptions become a message and exit status 1 in one place, and
the unacknowledged alerts about the user's own identities (§7.3 "Monitoring") of
every server a command synced become warnings and exit status ``EXIT_ALERTS``. A
looked-up identity's key changes since the last lookup are told once, on stderr
(``EXIT_NEW_OWNER`` for a new owner); a server caught cheating by its own signed
replies fails the command with where the evidence is kept.
"""

from __future__ import annotations

import json
import os
import signal
from typing import TYPE_CHECKING, Callable

import click

from .accounts import Accounts
from .clock import now_ms
from .contacts import key_changes
from .interrupts import signals_interrupt
from .protocol.encoding import b64decode, b64encode, b64url_decode, format_ms
from .protocol.errors import ChainError, ClientError, ProtocolError, Unreachable
from .protocol.identity import normalize_identity
from .protocol.keyquery import Notary
from .protocol.note import format_verifier_key
from .protocol.uidmessage import UIDMessage
from .session import ServerSession, Witnessing, add_server, witnessing
from .store.home import Home, default_home
from .store.lock import HomeLock
from .trust.continuity import has_new_owner
from .trust.evidence import ServerCheating
from .trust.history import LookupResult
from .trust.monitor import NEW_OWNER, RECOVERY, UPDATE, Alert, fingerprint
from .witnesses import NOT_YET_WITNESSED, parse_witness_key

if TYPE_CHECKING:
    # The keystore and KeyInit modules are imported by the commands that use them:
    # sync and lookup, the commands run most, start faster without them.
    from .store.keystore import Keystore


#: ``lookup``'s exit status for an identity whose keys must not be used now.
EXIT_NOT_CURRENT = 3
#: Exit status of a command that synced while an entry of the user's own
#: identities that they did not make is unacknowledged (a failing command keeps 1).
EXIT_ALERTS = 4
#: Exit status of ``lookup`` and ``keyinit fetch`` when the looked-up identity has a
#: new owner since this home last showed it (told once: it wins over 3 and 4, which
#: come back on the next run).
EXIT_NEW_OWNER = 5
#: Where ``ctx.meta`` keeps the command's ``ServerSession``s.
_SESSIONS = "keyclient.sessions"


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        """Run the command (``_run``); Ctrl-C, SIGTERM and SIGHUP stop it cleanly
        (``interrupts``): one line, no traceback, status 128 + the signal."""
        try:
            with signals_interrupt():
                try:
                    return self._run(ctx)
                except click.Abort as exc:
                    # A prompt turns a signal into Abort ("Aborted!", status 1): the
                    # signal's own line and status are told instead.
                    if isinstance(exc.__context__, KeyboardInterrupt):
                        raise exc.__context__ from None
                    raise
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            try:
                click.echo(f"\nkeyclient: stopped by {exc or 'Ctrl-C'}; what was verified is"
                           " kept: run the command again to go on", err=True)
            except OSError:
                pass   # the terminal is gone (SIGHUP)
            raise SystemExit(128 + signum) from None

    def _run(self, ctx: click.Context):
        """Run the command with its errors mapped (``_invoke``); whatever its outcome,
        warn of the alerts of the servers it synced, which turn a success (or
        lookup's 3) into ``EXIT_ALERTS``: a script must not miss a takeover."""
        try:
            result = self._invoke(ctx)
        except SystemExit as exc:
            if _warn_alerts(ctx) and exc.code in (0, None, EXIT_NOT_CURRENT):
                raise SystemExit(EXIT_ALERTS) from None
            raise
        except click.ClickException:
            _warn_alerts(ctx)
            raise
        if _warn_alerts(ctx):
            raise SystemExit(EXIT_ALERTS)
        return result

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ChainError as exc:
            raise click.ClickException(
                f"the chain failed verification and was rejected whole: {exc}") from None
        except ServerCheating as exc:
            raise click.ClickException(f"{exc}\n{_evidence_kept(ctx.obj, exc)}") from None
        except (ProtocolError, ClientError) as exc:
            raise click.ClickException(_plain(exc, ctx.meta.get(_VERBOSE, False))) from None


#: What to do next after a server's refusal, by errcode (the message says what).
_NEXT_STEP = {
    "VOUCHER_INVALID": "check the code (case, spaces, dashes, 0 for O and 1 for I do not "
                       "matter) and how many tokens you ask for (-n), or ask whoever sold it",
    "TOKEN_REQUIRED": "buy tokens with 'keyclient tokens buy VOUCHER'",
    "TOKEN_INVALID": "run the command again (it takes another token), or buy tokens with "
                     "'keyclient tokens buy VOUCHER'",
    "TOKEN_SPENT": "run the command again (it takes another token), or buy tokens with "
                   "'keyclient tokens buy VOUCHER'",
    "IDENTITY_TAKEN": "choose another name",
    "RESERVED_IDENTITY": "choose another name",
    "DOMAIN_NOT_SERVED": "register it on a server of that domain",
    "STALE_LASTENTRY": "the chain grew meanwhile: run the command again",
    "KEYINIT_LIMIT": "the server holds as many as it allows: publish more when senders have "
                     "used some ('keyclient keyinit status')",
    "RATE_LIMITED": "wait a little, then try again",
    "UNAVAILABLE": "the server is busy or in maintenance: try again later",
}


def _plain(exc: ProtocolError | ClientError, verbose: bool) -> str:
    """An error in plain words, with what to do next; the request, HTTP status and
    errcode a server's answer carried only with --verbose."""
    text = str(exc)
    if isinstance(exc, ProtocolError) and exc.status is not None:
        step = _NEXT_STEP.get(exc.errcode)
        text = f"the server {'refused' if exc.refused else 'failed'}: {text}" + (
            f" — {step}" if step else "")
        if verbose:
            text += f" [{exc.request}: {exc.status} {exc.errcode}]"
    return text


#: Where ``ctx.meta`` says whether --verbose was given.
_VERBOSE = "keyclient.verbose"


def _verbose() -> bool:
    """Whether the user asked for the protocol's terms and details (--verbose)."""
    return click.get_current_context().meta.get(_VERBOSE, False)


@click.group(cls=_Group, help="Find and publish keys on hashchain keyservers.",
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashchain-keyserver", prog_name="keyclient")
@click.option("--home", envvar="KEYCLIENT_HOME", type=click.Path(file_okay=False),
              default=default_home, show_default="a per-user data directory",
              help="Folder of the client's state (or $KEYCLIENT_HOME).")
@click.option("--wait", envvar="KEYCLIENT_WAIT", type=click.FloatRange(0), default=120,
              show_default=True, metavar="SECONDS",
              help="How long to wait while another keyclient command uses the home"
                   " (or $KEYCLIENT_WAIT).")
@click.option("-v", "--verbose", is_flag=True,
              help="Say more: the protocol's terms, and the request, HTTP status and error"
                   " code of a server's refusal.")
@click.pass_context
def main(ctx: click.Context, home: str, wait: float, verbose: bool) -> None:
    ctx.meta[_VERBOSE] = verbose
    # One command at a time per home: two syncs appending to one chain would each
    # see the other's entries as a fork of the server's.
    os.makedirs(home, mode=0o700, exist_ok=True)
    lock = HomeLock(home)
    lock.acquire(wait, waiting=lambda holder: click.echo(
        f"another keyclient command{f' (process {holder})' if holder else ''} is using this"
        f" home; waiting (up to {wait:g} s)...", err=True))
    ctx.call_on_close(lock.release)
    ctx.obj = Home(home)


def _evidence_kept(home: Home, exc: ServerCheating) -> str:
    """Where the proof of a server caught cheating is (the session kept it)."""
    kept = " and ".join(part for part in (
        f"{len(exc.replies)} signed replies" if exc.replies else "",
        f"{len(exc.notes)} checkpoints it signed" if exc.notes else "") if part)
    return (f"The {kept} that prove it are kept as evidence in "
            f"{os.path.join(home.path, 'state.sqlite')}: 'keyclient evidence' lists them "
            "('--json' prints them to hand on). Do not trust this server.")


def _warn_alerts(ctx: click.Context) -> bool:
    """Print the unacknowledged alerts of every server the command checked for
    entries the user did not make, one loud line each on stderr; whether any."""
    servers = [session.server for session in ctx.meta.get(_SESSIONS, []) if session.monitored]
    alerts = [alert for server in dict.fromkeys(servers)
              for alert in ctx.obj.alerts(server, acknowledged=False)]
    for alert in alerts:
        click.secho(f"WARNING: {_describe(alert)}. If you made it on another device: "
                    f"keyclient monitor ack {alert.identity} {alert.pos}"
                    f" --server {alert.server}", err=True, fg="red", bold=True)
    return bool(alerts)


def _describe(alert: Alert) -> str:
    """One line on an entry of the user's identity that this client did not make."""
    key = (f"new signing key {alert.fingerprint}" if alert.fingerprint else
           "its history fails verification: a forced takeover?")
    return (f"{alert.identity} on {alert.server} has an entry you did not make at "
            f"position {alert.pos}: {alert.kind}, {key}")


#: What authorized a looked-up identity's new entry, in words.
_KINDS = {UPDATE: "update, signed by the previous key",
          RECOVERY: "recovery, authorized by the escrow key (as after a lost or stolen key)",
          NEW_OWNER: "new owner: the name was reclaimed after it expired, it may be"
                     " another person now"}


def _announce_key_changes(session: ServerSession, result: LookupResult) -> bool:
    """Tell the user, loudly on stderr, of every entry of a looked-up identity since
    the message this home last showed them (once: it is remembered as shown now);
    whether the name has a new owner."""
    changes = key_changes(session, result)
    if not changes:
        return False
    identity, new_owner = result.identity, has_new_owner(changes)
    latest = changes[-1].fingerprint
    if all(change.same_key for change in changes):
        head = (f"NOTICE: {identity} on {session.server} has new entries since you last "
                f"looked it up; its signing key is unchanged:")
        tail = ""
    else:
        head = (f"{'WARNING' if new_owner else 'NOTICE'}: the keys of {identity} on "
                f"{session.server} changed since you last looked them up:")
        tail = (f"Check with {identity} (in person, or on another channel) that the signing"
                f" key {latest} is theirs before you trust it.")
    lines = [head, *(f"  position {change.pos}: {_KINDS[change.kind]}; "
                     f"{'same' if change.same_key else 'new'} signing key {change.fingerprint}"
                     for change in changes), *([tail] if tail else [])]
    click.secho("\n".join(lines), err=True, bold=True, fg="red" if new_owner else "yellow")
    return new_owner


def _new_session(home: Home, name: str, url: str,
                 progress: Callable[[str], None] = lambda step: None) -> ServerSession:
    """A session the command's end checks for alerts (``_warn_alerts``)."""
    session = ServerSession(home, name, url, progress=progress, notice=_notice)
    click.get_current_context().meta.setdefault(_SESSIONS, []).append(session)
    return session


def _notice(message: str) -> None:
    click.echo(message, err=True)


_server_option = click.option("--server", help="Keyserver name (needed when several are known).")


@main.group("server", help="The keyservers this client knows.")
def server_group() -> None:
    pass


@server_group.command("add")
@click.argument("url")
@click.option("--move", is_flag=True,
              help="The server is already known at another URL and has moved to URL.")
@click.pass_obj
def server_add(home: Home, url: str, move: bool) -> None:
    """Remember the keyserver at URL (its capabilities' signature is checked)."""
    name = add_server(home, url, move, notice=_notice)
    click.echo(f"added {name} at {url}")


_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print JSON (for scripts) instead of text.")


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@server_group.command("list")
@_json_option
@click.pass_obj
def server_list(home: Home, as_json: bool) -> None:
    """The remembered keyservers, with how much of their chain is verified here."""
    default = home.default_server
    servers = [(name, url, home.chain(name)) for name, url in home.servers()]
    if as_json:
        _echo_json([{"name": name, "url": url, "verified_entries": chain.length,
                     "synced_ts": chain.synced_ts, "default": name == default,
                     **_witnessed_json(witnessing(home, name))}
                    for name, url, chain in servers])
        return
    for name, url, chain in servers:
        synced = f", synced {_ago(chain.synced_ts)}" if chain.synced_ts else ""
        click.echo(f"{name}  {url}  {chain.length} entries verified{synced}"
                   f"{'  (default)' if name == default else ''}")
    if not servers:
        click.echo("no servers yet: add one with 'keyclient server add URL'")


@server_group.command("default")
@click.argument("name")
@click.pass_obj
def server_default(home: Home, name: str) -> None:
    """Use the keyserver NAME when several are known and --server names none."""
    name, _ = _servers(home, name)[0]
    home.default_server = name
    click.echo(f"{name} is the default server")


@server_group.command("remove")
@click.argument("name")
@click.pass_obj
def server_remove(home: Home, name: str) -> None:
    """Forget the keyserver NAME and its downloaded chain. The replies it signed for
    your identities and any evidence against it stay in the home."""
    name, _ = _servers(home, name)[0]
    home.forget_server(name)
    click.echo(f"removed {name}")


def _ago(ts: int) -> str:
    """How long ago ``ts`` was, in words."""
    seconds = max(now_ms() - ts, 0) // 1000
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


@main.group("notary", help="Notaries that corroborate the keyservers' keys.")
def notary_group() -> None:
    pass


@notary_group.command("add")
@click.argument("server_name")
@click.argument("url")
@click.argument("key_id")
@click.argument("key")
@click.pass_obj
def notary_add(home: Home, server_name: str, url: str, key_id: str, key: str) -> None:
    """Trust the notary SERVER_NAME at URL, whose answers are signed by KEY_ID (e.g.
    ed25519:abc) with the Ed25519 public key KEY (base64). Every keyserver met from
    now on, and every key change, is checked with it."""
    try:
        pubkey = b64decode(key, "KEY", length=32)
    except ProtocolError as exc:
        raise click.BadParameter(exc.message, param_hint="KEY") from None
    notary = Notary(server_name, url, key_id, pubkey)
    home.add_notary(notary, now_ms())
    click.echo(f"trusting notary {server_name} at {url} (key {key_id})")


@notary_group.command("list")
@click.pass_obj
def notary_list(home: Home) -> None:
    """The notaries this client trusts."""
    notaries = home.notaries()
    if not notaries:
        click.echo("no notaries: keyservers' keys are taken on their own word")
    for notary in notaries:
        click.echo(f"{notary.server_name}  {notary.url}  {notary.key_id} "
                   f"{b64encode(notary.pubkey)}")


@notary_group.command("remove")
@click.argument("server_name")
@click.pass_obj
def notary_remove(home: Home, server_name: str) -> None:
    """Stop trusting the notary SERVER_NAME."""
    if not home.remove_notary(server_name):
        raise click.ClickException(f"no notary {server_name}")
    click.echo(f"removed notary {server_name}")


@main.group("witness", help="Witnesses that cosign the keyservers' logs: with a"
                              " quorum, a log is trusted only as far as they cosigned it.")
def witness_group() -> None:
    pass


@witness_group.command("add")
@click.argument("name")
@click.argument("key")
@_server_option
@click.option("--quorum", type=click.IntRange(0), metavar="K",
              help="How many of the server's witnesses must cosign a tree before it is "
                   "trusted (default: as it was, 1 for the first witness).")
@click.pass_obj
def witness_add(home: Home, name: str, key: str, server: str | None,
                quorum: int | None) -> None:
    """Trust the witness NAME (e.g. other.example/witness) for a server's log, with its
    cosignature verifier key KEY (NAME+<hex key id>+<base64 key>, as 'keyserver witness
    key' prints it on the witness)."""
    server, _ = _one_server(home, server)
    quorum = home.add_witness(server, parse_witness_key(name, key), quorum, now_ms())
    count = len(home.witnesses(server))
    click.echo(f"trusting witness {name} for {server}; quorum {quorum} of {count} witness(es)"
               f" (change it with 'keyclient witness quorum K --server {server}')")


@witness_group.command("list")
@_server_option
@_json_option
@click.pass_obj
def witness_list(home: Home, server: str | None, as_json: bool) -> None:
    """The witnesses trusted for each server (or SERVER), its quorum, and how far its
    log is witnessed."""
    listed = [(name, home.witnesses(name), witnessing(home, name))
              for name, _ in _servers(home, server)]
    if as_json:
        _echo_json([{"server": name, "quorum": home.quorum(name),
                     "witnesses": [{"name": key.name, "key": format_verifier_key(key)}
                                   for key in keys],
                     **_witnessed_json(witnessed)} for name, keys, witnessed in listed])
        return
    for name, keys, witnessed in listed:
        if not keys:
            click.echo(f"{name}: no witnesses: split views cannot be detected (add one with "
                       f"'keyclient witness add NAME KEY --server {name}')")
            continue
        click.echo(f"{name}: quorum {home.quorum(name)} of {len(keys)}; "
                   f"{_witnessed_text(witnessed)}")
        for key in keys:
            click.echo(f"  {key.name}  {format_verifier_key(key)}")


@witness_group.command("remove")
@click.argument("name")
@_server_option
@click.pass_obj
def witness_remove(home: Home, name: str, server: str | None) -> None:
    """Stop trusting the witness NAME for a server."""
    server, _ = _one_server(home, server)
    home.remove_witness(server, name)
    click.echo(f"removed witness {name} for {server}; quorum {home.quorum(server)} of "
               f"{len(home.witnesses(server))}")


@witness_group.command("quorum")
@click.argument("quorum", type=click.IntRange(0), metavar="K")
@_server_option
@click.pass_obj
def witness_quorum(home: Home, quorum: int, server: str | None) -> None:
    """Trust a server's log only as far as K of its witnesses cosigned it (0: no
    witness needed; then split views cannot be detected)."""
    server, _ = _one_server(home, server)
    home.set_quorum(server, quorum)
    click.echo(f"quorum {quorum} of {len(home.witnesses(server))} witness(es) for {server}")


def _witnessed_text(witnessed: Witnessing | None) -> str:
    """How far a server's log is witnessed, in words."""
    if witnessed is None:
        return "not witnessed (no quorum of witnesses is required)"
    if witnessed.cosigned is None:
        return f"no checkpoint is cosigned by {witnessed.quorum} witness(es) yet"
    return (f"witnessed up to size {witnessed.tree_size} by "
            f"{', '.join(witnessed.witnesses)} (quorum {witnessed.quorum})")


def _witnessed_json(witnessed: Witnessing | None) -> dict:
    """The ``--json`` fields of how far a server's log is witnessed (a size of None:
    no quorum is required, the whole verified chain is trusted)."""
    return {"quorum": witnessed.quorum if witnessed else 0,
            "witnessed_size": witnessed.tree_size if witnessed else None,
            "witnesses_relied_on": witnessed.witnesses if witnessed else []}


def _unwitnessed_notice(session: ServerSession) -> None:
    """Say on stderr when the verified chain goes beyond the witnessed log."""
    witnessed = session.witnessing
    if witnessed is not None and session.chain.length > witnessed.tree_size:
        click.echo(NOT_YET_WITNESSED.format(
            count=session.chain.length - witnessed.tree_size, server=session.server,
            quorum=witnessed.quorum, size=witnessed.tree_size), err=True)


@main.command("sync")
@click.argument("server", required=False)
@click.pass_obj
def sync(home: Home, server: str | None) -> None:
    """Download and verify SERVER's chain from the last verified position (all
    remembered servers if none is named)."""
    for name, url in _servers(home, server):
        session = _new_session(home, name, url)
        with click.progressbar(length=_entries_to_fetch(session),
                               label=f"syncing {name}") as bar:
            added = session.sync(progress=bar.update)
        current = session.keys[-1]
        click.echo(f"{name}: {added} new entries, {session.chain.length} verified; "
                   f"server key {b64encode(current.pubkey)} (since position {current.pos});"
                   f" {_witnessed_text(session.witnessing)}")


def _entries_to_fetch(session: ServerSession) -> int:
    """For the progress bar: the sync needs the capabilities anyway, and they name
    the head (checked with their signature after the sync; a false one only
    misjudges the bar)."""
    return max(session.capabilities.hashchain_head.pos + 1 - session.chain.length, 0)


def _identity(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An identity as the user typed it, normalized (§2)."""
    try:
        return normalize_identity(value)
    except ProtocolError as exc:
        raise click.BadParameter(exc.message) from None


def _typed_identity(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``_identity``, saying on stderr when normalization changed the name."""
    identity = _identity(ctx, param, value)
    _normalized_notice(value, identity)
    return identity


def _servers(home: Home, server: str | None) -> list[tuple[str, str]]:
    """The named server, or every known one; an error when there is none."""
    known = home.servers()
    servers = [(name, url) for name, url in known if server in (None, name)]
    if not servers:
        raise click.ClickException(
            f"unknown server {server!r} (known: {_names(known)}); add it with 'keyclient"
            " server add URL'" if known else
            "no servers yet: add one with 'keyclient server add URL'")
    return servers


def _names(servers: list[tuple[str, str]]) -> str:
    return ", ".join(name for name, _ in servers) or "none"


def _one_server(home: Home, server: str | None) -> tuple[str, str]:
    """The named server, else the only or the default one."""
    servers = _servers(home, server or home.default_server)
    if len(servers) != 1:
        raise click.ClickException(
            f"several servers are known ({_names(servers)}): name one with --server, or set"
            " one as the default with 'keyclient server default NAME'")
    return servers[0]


_offline_option = click.option(
    "--offline", is_flag=True,
    help="Do not contact the server: use the chain as last verified here and the replies"
         " kept (says how old they are).")


def _reachable(session: ServerSession, command: str, call: Callable[[], object]):
    """``call()``; a server that cannot be reached is an error that suggests the
    offline command (never a silent fallback to old data)."""
    try:
        return call()
    except Unreachable as exc:
        synced = session.chain.synced_ts
        since = f", synced {_ago(synced)}" if synced and session.chain.length else ""
        raise click.ClickException(
            f"{exc} ('keyclient {command} --offline' uses what this home verified{since})"
        ) from None


def _offline_session(home: Home, server: str | None) -> ServerSession:
    """The named (or only, or default) server as this home last verified it, said
    on stderr with its age."""
    from .offline import OfflineSession

    name, url = _one_server(home, server)
    session = OfflineSession(home, name, url)
    click.get_current_context().meta.setdefault(_SESSIONS, []).append(session)
    synced = session.chain.synced_ts
    when = f"last synced {_ago(synced)} ({format_ms(synced)})" if synced else "never fully synced"
    click.echo(f"offline: {name}'s chain as verified here, {session.chain.length} entries, "
               f"{when}; changes since then are not shown", err=True)
    return session


@main.command("lookup")
@click.argument("identity", callback=_typed_identity)
@_server_option
@_offline_option
@click.option("--light", is_flag=True,
              help="Do not download the chain: ask the server for IDENTITY's latest entry"
                   " and its proof in a signed checkpoint. The server learns whom you look"
                   " up, and this cannot prove that no later entry exists.")
@_json_option
@click.pass_obj
def lookup_command(home: Home, identity: str, server: str | None, offline: bool,
                   light: bool, as_json: bool) -> None:
    """Sync, search the whole chain for IDENTITY, verify every message of it and
    print its current keys. When they changed since you last looked IDENTITY up,
    each entry since is named on stderr, once. Exit status 1 when it is not on the
    chain (or anything fails to verify), 3 when its keys are expired or not yet
    valid (4 when one of your identities has an unacknowledged alert), 5 when the
    name has a new owner since you last looked it up.

    With --light, only IDENTITY's latest entry is fetched, with its inclusion
    proof in a checkpoint signed by the server's log key.

    With a quorum of witnesses set for the server ('keyclient witness'), only the
    log as far as they cosigned it counts: newer entries are named on stderr as not
    yet witnessed, and an identity with none before is not shown (exit status 1)."""
    if light and offline:
        raise click.UsageError("--light asks the server: it cannot be --offline")
    if light:
        _light_lookup(_session(home, server), identity, as_json)
        return
    if offline:
        session = _offline_session(home, server)
    else:
        session = _session(home, server)
        _reachable(session, f"lookup {identity}", session.sync)
    trusted = _reachable(session, f"lookup {identity}",
                         lambda: session.trusted_lookup(identity))
    result, pending = trusted.result, trusted.pending()
    _unwitnessed_notice(session)
    witnessed = _witnessed_json(trusted.witnessing)
    if result is None:
        if as_json:
            _echo_json({"identity": identity, "server": session.server, "found": False,
                        "entries_searched": session.chain.length,
                        "not_yet_witnessed": list(trusted.unwitnessed), **witnessed})
        elif pending:
            click.echo(f"{identity}: not yet witnessed on {session.server}: {pending}; "
                       "try again later")
        else:
            click.echo(f"{identity}: not found on {session.server} "
                       f"({session.chain.length} entries searched)")
        raise SystemExit(1)
    if pending:
        click.secho(f"NOTICE: {pending}; showing its keys as of the witnessed log", err=True,
                    fg="yellow")
    message = result.message
    now = now_ms()
    status = ("current" if result.is_current(now) else
              "not yet valid" if now < message.not_before_ts else "expired")
    if as_json:
        new_owner = _announce_key_changes(session, result)
        _echo_json({
            "identity": identity, "server": session.server, "found": True, "status": status,
            "offline": offline, "synced_ts": session.chain.synced_ts,
            "positions": [found.pos for found in result.history],
            "msgcount": message.msgcount, "not_before_ts": message.not_before_ts,
            "not_after_ts": message.not_after_ts, "sigkey": b64encode(message.sigkey.pubkey),
            "fingerprint": fingerprint(message.sigkey.pubkey),
            "sigescrow": b64encode(message.sigescrow.pubkey) if message.sigescrow else None,
            "pubkeys": [{"pubkey": b64encode(key.pubkey), "function": key.function}
                        for key in message.pubkeys],
            "repouris": list(message.repouris), "new_owner": new_owner,
            "not_yet_witnessed": list(trusted.unwitnessed), **witnessed})
    else:
        _print_keys(identity, result, status)
        if trusted.witnessing is not None:   # the quorum this answer relied on
            click.echo(f"  log:        {_witnessed_text(trusted.witnessing)}")
        new_owner = _announce_key_changes(session, result)
    if new_owner:
        raise SystemExit(EXIT_NEW_OWNER)
    if not result.is_current(now):
        raise SystemExit(EXIT_NOT_CURRENT)


#: What a light lookup cannot do, said every time.
LIGHT_CAVEAT = ("light lookup: the server learned that you looked up {identity}, and this"
                " proves only that this entry is in its log, not that no later entry of"
                " {identity} exists (only a full sync, 'keyclient lookup {identity}', can);"
                " the history before it was not checked either")


def _light_lookup(session: ServerSession, identity: str, as_json: bool) -> None:
    """``lookup --light``: the latest entry, proven in a signed checkpoint."""
    result = _reachable(session, f"lookup {identity}", lambda: session.light_lookup(identity))
    found, message = result.found, result.found.message
    key_from = ("the log key the synced chain binds" if result.log_key_from == "chain" else
                "the log key the server's capabilities name (sync the chain once to pin it)")
    click.echo(LIGHT_CAVEAT.format(identity=identity), err=True)
    now = now_ms()
    current = message.not_before_ts <= now < message.not_after_ts
    status = ("current" if current else
              "not yet valid" if now < message.not_before_ts else "expired")
    if as_json:
        _echo_json({
            "identity": identity, "server": session.server, "found": True, "light": True,
            "status": status, "position": found.pos, "tree_size": result.checkpoint.tree_size,
            "log_key_from": result.log_key_from, "msgcount": message.msgcount,
            "not_before_ts": message.not_before_ts, "not_after_ts": message.not_after_ts,
            "sigkey": b64encode(message.sigkey.pubkey),
            "fingerprint": fingerprint(message.sigkey.pubkey),
            "pubkeys": [{"pubkey": b64encode(key.pubkey), "function": key.function}
                        for key in message.pubkeys], "repouris": list(message.repouris),
            **_witnessed_json(result.witnessing)})
    else:
        click.echo(f"{identity}: {status} (light: latest entry only)")
        click.echo(f"  position:   {found.pos}, in the checkpoint of tree size "
                   f"{result.checkpoint.tree_size}, signed by {key_from}")
        click.echo(f"  log:        {_witnessed_text(result.witnessing)}")
        _print_message(message, with_escrow=False)
    if not current:
        raise SystemExit(EXIT_NOT_CURRENT)


def _print_keys(identity: str, result: LookupResult, status: str) -> None:
    message = result.message
    click.echo(f"{identity}: " + {
        "current": "current", "not yet valid": "NOT YET VALID: do not use these keys yet",
        "expired": "EXPIRED: do not use these keys"}[status])
    click.echo(f"  positions:  {', '.join(str(found.pos) for found in result.history)}")
    _print_message(message, with_escrow=True)


def _print_message(message: UIDMessage, with_escrow: bool) -> None:
    """A looked-up UIDMessage's keys, one per line (``msgcount`` with ``--verbose``)."""
    if _verbose():
        click.echo(f"  msgcount:   {message.msgcount}")
    click.echo(f"  valid:      {format_ms(message.not_before_ts)}"
               f" .. {format_ms(message.not_after_ts)}")
    click.echo(f"  sigkey:     {b64encode(message.sigkey.pubkey)}")
    click.echo(f"  fingerprint: {fingerprint(message.sigkey.pubkey)}")
    if with_escrow:
        escrow = b64encode(message.sigescrow.pubkey) if message.sigescrow else "none"
        click.echo(f"  sigescrow:  {escrow}")
    for key in message.pubkeys:
        click.echo(f"  pubkey:     {b64encode(key.pubkey)} ({key.function})")
    click.echo(f"  repouris:   {', '.join(message.repouris) or 'none'}")


@main.group("tokens", help="The token wallet that pays for writes.")
def tokens_group() -> None:
    pass


@tokens_group.command("add")
@click.argument("tokens", nargs=-1, required=True)
@click.option("--server", help="Keyserver name the tokens are for.")
@click.pass_obj
def tokens_add(home: Home, tokens: tuple[str, ...], server: str | None) -> None:
    """Store TOKENS (base64url, as 'keyserver tokens mint' prints them)."""
    name, _ = _one_server(home, server)
    raw = [b64url_decode(token.strip(), "token", error=click.BadParameter) for token in tokens]
    with home.wallet() as wallet:
        added = wallet.add(name, raw)
    click.echo(f"added {added} token(s) for {name}")


@tokens_group.command("buy")
@click.argument("voucher")
@click.option("-n", "count", type=click.IntRange(1, 100), default=10, show_default=True,
              help="How many tokens to buy with the voucher.")
@_server_option
@click.pass_obj
def tokens_buy(home: Home, voucher: str, count: int, server: str | None) -> None:
    """Exchange VOUCHER for N unlinkable tokens (blind issuance)."""
    name, url = _one_server(home, server)
    session = _new_session(home, name, url)
    with home.wallet() as wallet:
        remaining = session.buy_tokens(wallet, voucher, count)
    warning = session.token_key_warning()
    if warning:
        click.secho(f"Warning: {warning}", fg="yellow", err=True)
    click.echo(f"bought {count} token(s) for {name}; the voucher has {remaining} left")


@tokens_group.command("list")
@_json_option
@click.pass_obj
def tokens_list(home: Home, as_json: bool) -> None:
    """Tokens per server and state."""
    with home.wallet() as wallet:
        counts = {name: wallet.count(name) for name, _ in home.servers()}
    if as_json:
        _echo_json({name: {"available": 0, **count} for name, count in counts.items()})
        return
    for name, count in counts.items():
        click.echo(f"{name}: {count.get('available', 0)} available"
                   + "".join(f", {n} {state}" for state, n in sorted(count.items())
                             if state != "available"))
    if not counts:
        click.echo("no servers yet, so no tokens: add a server with 'keyclient server add URL'")
    elif not any(sum(count.values()) for count in counts.values()):
        click.echo("the wallet is empty: 'keyclient tokens buy VOUCHER' or 'keyclient tokens "
                   "add TOKEN' fills it")


def _keystore(home: Home) -> Keystore:
    """The home's keystore, the passphrase asked (three tries) unless
    ``$KEYCLIENT_PASSPHRASE`` gives it."""
    from .store.keystore import PASSPHRASE_PROMPT, open_keystore

    def ask(confirm: bool) -> str:
        # An empty answer comes back (default ""), for open_keystore to say why it
        # is refused; click alone would ask again without a word.
        return click.prompt(PASSPHRASE_PROMPT, hide_input=_can_hide_input(), default="",
                            show_default=False, confirmation_prompt=confirm)

    return open_keystore(os.path.join(home.path, "keys"), ask, _notice)


def _can_hide_input() -> bool:
    """Whether a hidden prompt can hide the input: without a controlling terminal
    (a pipe, a service) Python's getpass warns (``GetPassWarning``) and reads with
    echo anyway, so the prompt is a plain one (a pipe echoes nothing)."""
    if os.name != "posix":
        return True
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _session(home: Home, server: str | None) -> ServerSession:
    """The named (or only) server, reporting progress."""
    name, url = _one_server(home, server)
    return _new_session(home, name, url, progress=lambda step: click.echo(f"... {step}",
                                                                          err=True))


def _accounts(home: Home, server: str | None) -> Accounts:
    """The user's identities on the named (or only) server, with the keystore."""
    return Accounts(_session(home, server), _keystore(home))


@main.command("register")
@click.argument("identity")
@_server_option
@click.option("--escrow-out", type=click.Path(dir_okay=False, writable=True),
              help="Write the escrow key's paper backup to this file instead of printing it.")
@click.option("--yes", is_flag=True, help="Do not ask whether the paper backup is saved, nor"
                                          " to confirm a name that normalization changed.")
@click.option("--discard-unfinished", is_flag=True,
              help="Delete keys of IDENTITY left by an unfinished registration of an older"
                   " keyclient (never used: IDENTITY is not on the chain), then register.")
@click.pass_context
def register_command(ctx: click.Context, identity: str, server: str | None,
                     escrow_out: str | None, yes: bool, discard_unfinished: bool) -> None:
    """Register IDENTITY: a new signing key, an escrow key on paper, paid with a
    token from the wallet, confirmed on the chain. The domain, reserved names and
    whether IDENTITY is free are checked before any key is made or paper printed;
    no key is kept unless the registration is sent."""
    home: Home = ctx.obj
    typed, identity = identity, _identity(ctx, None, identity)
    if _normalized_notice(typed, identity) and not yes:
        if not click.confirm(f"Register {identity}?"):
            raise click.ClickException("registration cancelled: nothing was made")
    accounts = _accounts(home, server)

    def deliver(paper: str) -> None:
        if escrow_out:
            fd = os.open(escrow_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(paper)
            click.echo(f"escrow key backup written to {escrow_out}: print it, store the "
                       "paper safely, then delete the file")
        else:
            click.echo(paper)

    def confirm() -> bool:
        return yes or click.confirm("Is the escrow key backup saved (on paper)?")

    written = accounts.register(identity, deliver_paper=deliver, confirm=confirm,
                                discard_unfinished=discard_unfinished)
    click.echo(f"registered {identity} on {accounts.server} at position {written.pos}; the "
               "escrow key is now only on your backup")


def _normalized_notice(typed: str, identity: str) -> bool:
    """Say on stderr when normalization changed more than the case of what was
    typed (look-alikes folded: ``1``→``l``, ``0``→``o``, ``j``→``i``); True then."""
    if typed.lower() == identity:
        return False
    click.echo(f"note: {typed} is written {identity} (look-alike characters are folded: "
               "1 as l, 0 as o, j as i)", err=True)
    return True


@main.command("update")
@click.argument("identity", callback=_identity)
@_server_option
@click.pass_obj
def update_command(home: Home, identity: str, server: str | None) -> None:
    """Give IDENTITY a new signing key, signed by the current one (also renews its
    validity). The server deletes the old key's KeyInits with it: as many are published
    again under the new key (one more token), or a warning says to publish some."""
    from . import keyinits

    accounts = _accounts(home, server)
    updated = keyinits.update(accounts.session, accounts, identity)
    written = updated.written
    click.echo(f"updated {identity} at position {written.pos} with a new signing key"
               + (f" (msgcount {written.msgcount})" if _verbose() else ""))
    if updated.republished is not None:
        published = updated.republished
        click.echo(f"published {published.count} KeyInit(s) ({published.fallbacks} fallback)"
                   f" under the new key in place of the {updated.had.stored} and "
                   f"{updated.had.fallback} fallback of the old one, valid until "
                   f"{format_ms(published.not_after_ts)}")
    elif updated.not_republished is not None:
        had = updated.had
        click.secho(f"Warning: the server deleted the {had.stored + had.fallback} KeyInit(s)"
                    f" of the old key and none could be published in their place "
                    f"({updated.not_republished}): senders cannot reach {identity} until "
                    f"'keyclient keyinit publish {identity}'", fg="yellow", err=True)
    elif updated.had is None:
        click.echo(f"note: any KeyInits of the old key were deleted with it: run 'keyclient "
                   f"keyinit publish {identity}' if senders should reach {identity}", err=True)


@main.command("recover")
@click.argument("identity", callback=_identity)
@click.option("--escrow", "escrow_file", type=click.File("r"), required=True,
              help="The escrow key's paper backup, typed into a file ('-' reads stdin).")
@_server_option
@click.pass_obj
def recover_command(home: Home, identity: str, escrow_file, server: str | None) -> None:
    """Give IDENTITY a new signing key authorized by the paper escrow key (when the
    signing key is lost or stolen). The file holds the paper's numbered lines, as
    typed back (the whole paper is read too)."""
    from .store.paper import parse_paper_backup

    backup_identity, escrow = parse_paper_backup(escrow_file.read(), identity)
    if backup_identity != identity:
        raise click.ClickException(f"the backup is for {backup_identity}, not {identity}")
    accounts = _accounts(home, server)
    written = accounts.recover(identity, escrow)
    click.echo(f"recovered {identity} at position {written.pos} with a new signing key"
               + (f" (msgcount {written.msgcount})" if _verbose() else ""))
    # The lost key's KeyInits went with it (§9); without that key, how many there
    # were cannot be asked.
    click.echo(f"note: any KeyInits of the old key were deleted with it: run 'keyclient "
               f"keyinit publish {identity}' if senders should reach {identity}", err=True)


@main.group("keyinit", help="KeyInits: single-use session keys for senders.")
def keyinit_group() -> None:
    pass


@keyinit_group.command("publish")
@click.argument("identity", callback=_identity)
@click.option("-n", "count", type=click.IntRange(1), default=10, show_default=True,
              help="How many KeyInits to upload (one request, one token).")
@click.option("--fallback", is_flag=True,
              help="Fallback KeyInits, handed out again when the others are used up.")
@click.option("--days", type=click.IntRange(1), help="Lifetime (default: the server's most).")
@_server_option
@click.pass_obj
def keyinit_publish(home: Home, identity: str, count: int, fallback: bool, days: int | None,
                    server: str | None) -> None:
    """Upload N KeyInits of IDENTITY (-n); their private keys stay here."""
    from . import keyinits

    accounts = _accounts(home, server)
    published = keyinits.publish(accounts.session, accounts, identity, count, fallback=fallback,
                                 lifetime_ms=days * 24 * 3600 * 1000 if days else None)
    kind = "fallback KeyInit(s)" if fallback else "KeyInit(s)"
    click.echo(f"published {published.count} {kind} of {identity} to {published.repouri}, "
               f"valid until {format_ms(published.not_after_ts)}")


@keyinit_group.command("fetch")
@click.argument("identity", callback=_identity)
@_server_option
@click.pass_obj
def keyinit_fetch(home: Home, identity: str, server: str | None) -> None:
    """As a sender: find IDENTITY on the chain, fetch one of its KeyInits, verify it
    with IDENTITY's signing key and print as JSON the keys it holds for starting a
    session with IDENTITY.

    Only repositories the keyserver vouches for are contacted, over https (http to
    loopback only); the others IDENTITY lists are skipped and named on stderr. As
    with lookup, keys changed since you last looked IDENTITY up are named on stderr,
    and a new owner makes the exit status 5."""
    from . import keyinits

    session = _session(home, server)
    new_owner: list[bool] = []
    fetched = keyinits.fetch(session, identity, found=lambda result: new_owner.append(
        _announce_key_changes(session, result)))
    for skipped in fetched.skipped:
        click.echo(f"skipped {skipped.uri}: {skipped.reason}", err=True)
    click.echo(json.dumps(fetched.to_json(), indent=2, sort_keys=True))
    if any(new_owner):
        raise SystemExit(EXIT_NEW_OWNER)


@keyinit_group.command("flush")
@click.argument("identity", callback=_identity)
@_server_option
@click.pass_obj
def keyinit_flush(home: Home, identity: str, server: str | None) -> None:
    """Delete every KeyInit of IDENTITY that the server still holds."""
    from . import keyinits

    accounts = _accounts(home, server)
    flushed = keyinits.flush(accounts.session, accounts, identity)
    click.echo(f"flushed {flushed} KeyInit(s) of {identity}")


@keyinit_group.command("status")
@click.argument("identity", callback=_identity)
@_server_option
@_json_option
@click.pass_obj
def keyinit_status(home: Home, identity: str, server: str | None, as_json: bool) -> None:
    """How many of IDENTITY's KeyInits the server still holds, and when the first
    expires: publish more before senders find none. Only the owner can ask (the
    request is signed with IDENTITY's signing key)."""
    from . import keyinits

    accounts = _accounts(home, server)
    left = keyinits.status(accounts.session, accounts, identity)
    if as_json:
        _echo_json({"identity": identity, "server": accounts.session.server,
                    "stored": left.stored, "fallback": left.fallback,
                    "expires_first_ts": left.expires_first_ts})
        return
    expiry = (f", the first expires {format_ms(left.expires_first_ts)}"
              if left.expires_first_ts is not None else "")
    click.echo(f"{identity}: {left.stored} KeyInit(s) and {left.fallback} fallback "
               f"KeyInit(s) left on {accounts.session.server}{expiry}")


@main.command("verify")
@_server_option
@_offline_option
@_json_option
@click.pass_obj
def verify_command(home: Home, server: str | None, offline: bool, as_json: bool) -> None:
    """Re-verify the local chain of every server (or SERVER) from its first entry, and
    that the server's replies for your identities match it."""
    verified = []
    for name, url in _servers(home, server):
        session = (_offline_session(home, name) if offline else _new_session(home, name, url))
        accounts = Accounts(session)
        replies = _reachable(session, "verify", accounts.verify)
        verified.append({"server": name, "verified_entries": accounts.chain.length,
                         "replies_matching": replies, "synced_ts": accounts.chain.synced_ts,
                         **_witnessed_json(session.witnessing)})
        if not as_json:
            click.echo(f"{name}: {accounts.chain.length} entries verified, {replies} of your "
                       "replies match the chain")
    if as_json:
        _echo_json(verified)


@main.command("evidence")
@_server_option
@click.option("--json", "as_json", is_flag=True,
              help="Print every piece with its signed replies as JSON, to hand on.")
@click.pass_obj
def evidence_command(home: Home, server: str | None, as_json: bool) -> None:
    """What this home keeps as proof that a server cheated: the server's own signed
    replies that break the protocol (times that decrease along the chain, a history
    that breaks the update rules), and checkpoints it signed that no honest log
    signs together (a rewritten history, or one a witness saw before the time the
    server gave an entry in it), oldest first."""
    kept = [(name, *piece) for name, _ in _servers(home, server)
            for piece in home.evidence(name)]
    if as_json:
        click.echo(json.dumps([{"server": name, "recorded_ts": ts, "what": what,
                                **({"replies": replies} if replies else {}),
                                **({"checkpoints": notes} if notes else {})}
                               for name, ts, what, replies, notes in kept],
                              indent=2, sort_keys=True))
        return
    for name, ts, what, replies, notes in kept:
        positions = ", ".join(str(reply["entry"]["hashchain_pos"]) for reply in replies)
        parts = ([f"{len(replies)} signed replies, positions {positions}"] if replies else []) \
            + ([f"{len(notes)} signed checkpoints"] if notes else [])
        click.echo(f"{name}, {format_ms(ts)}: {what} [{'; '.join(parts)}]")
        for note in notes:
            click.echo("  " + note.rstrip("\n").replace("\n", "\n  "))
    if not kept:
        click.echo("no evidence")


@main.group("monitor", help="Entries of your identities that this client did not make.")
def monitor_group() -> None:
    pass


@monitor_group.command("list")
@_server_option
@click.pass_obj
def monitor_list(home: Home, server: str | None) -> None:
    """Every alert, unacknowledged first: each sync checks your identities (those
    this client registered, updated or recovered) for entries you did not make."""
    alerts = home.alerts(server)
    for alert in sorted(alerts, key=lambda alert: alert.acknowledged_ts is not None):
        state = ("UNACKNOWLEDGED" if alert.acknowledged_ts is None else
                 f"acknowledged {format_ms(alert.acknowledged_ts)}")
        click.echo(f"{state}: {_describe(alert)}")
    if not alerts:
        click.echo("no alerts")


@monitor_group.command("ack")
@click.argument("identity", callback=_identity)
@click.argument("position", type=click.IntRange(0))
@_server_option
@click.pass_obj
def monitor_ack(home: Home, identity: str, position: int, server: str | None) -> None:
    """Acknowledge the entry of IDENTITY at POSITION as yours (an update made on
    another device): it no longer warns nor changes the exit status."""
    acknowledged = home.acknowledge_alert(identity, position, now_ms(), server)
    if not acknowledged:
        raise click.ClickException(f"no unacknowledged alert for {identity} at position "
                                   f"{position}: see 'keyclient monitor list'")
    for alert in acknowledged:
        click.echo(f"acknowledged: {_describe(alert)}")
