"""The operator's ``keyserver`` command.

``init`` and ``run`` work on an instance folder; the other commands are also
registered on the app's Flask CLI (``flask --app keyserver chain verify``).
Commands stay thin: parse options, call one function, echo.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import sqlite3
import sys

import click
from click.core import ParameterSource
from flask import Flask, current_app
from flask.cli import ScriptInfo

from client.protocol.encoding import b64encode, b64url_encode, format_ms
from client.protocol.errors import ChainError, ProtocolError
from client.protocol.hashchain import open_entry
from client.protocol.identity import server_identity
from client.protocol.note import format_verifier_key
from client.protocol.tokens import mint_token

from . import create_app
from .clock import now_ms
from .config import ConfigError
from .instance import LogShrunk
from .http.context import key_file, policy, server_keys, sign, token_keyring, witness
from .service import own, payment, tokenkeys
from .storage import chain, db, keyinits, tree, vouchers
from .storage import witness as witness_store
from .storage.db import StorageUnavailable
from .storage.tokens import all_keys, spent_count


def _open_instance(path: str | None, serving: bool = False) -> Flask:
    app = create_app(instance_path=path, serving=serving)
    if not os.path.exists(db.database_path(app)):
        raise click.ClickException(
            f"no keyserver instance in {app.instance_path}; create one with 'keyserver init'")
    return app


def with_instance(command, serving: bool = False):
    """Give a command ``--instance PATH`` (or ``$KEYSERVER_INSTANCE``) and run it
    inside that instance's app context; under the Flask CLI (``flask --app``),
    the app it loads is used instead. Only a ``serving`` command (run, worker) is
    refused an instance whose log shrank (``instance.check_published``)."""

    @click.option("--instance", "instance_path", envvar="KEYSERVER_INSTANCE",
                  type=click.Path(file_okay=False), metavar="PATH",
                  help="Instance folder (default: $KEYSERVER_INSTANCE).")
    @functools.wraps(command)
    def wrapper(instance_path, **kwargs):
        ctx = click.get_current_context()
        info = ctx.find_object(ScriptInfo)
        app = (info.load_app() if info is not None
               else _chosen_instance(ctx, instance_path, serving))
        with app.app_context():
            return command(**kwargs)

    return wrapper


def _chosen_instance(ctx: click.Context, instance_path: str | None, serving: bool) -> Flask:
    """The instance named by ``--instance`` or ``$KEYSERVER_INSTANCE``, else the
    repository's ``instance/`` folder if it holds one. Unless named on the command
    line, which one is said on stderr: a command run from the wrong shell must not
    quietly act on another instance."""
    if instance_path is None:
        app = create_app(instance_path=None, serving=serving)
        if not os.path.exists(db.database_path(app)):
            raise click.ClickException(
                "which instance? Name it with --instance PATH or $KEYSERVER_INSTANCE (create"
                " one with 'keyserver init')")
        click.echo(f"keyserver: using the repository's instance {app.instance_path} (no "
                   "--instance or $KEYSERVER_INSTANCE given)", err=True)
        return app
    app = _open_instance(instance_path, serving=serving)
    if ctx.get_parameter_source("instance_path") is ParameterSource.ENVIRONMENT:
        click.echo(f"keyserver: using the instance {app.instance_path} "
                   "($KEYSERVER_INSTANCE)", err=True)
    return app


def with_serving_instance(command):
    return with_instance(command, serving=True)


class _OperatorErrors(click.Group):
    """A bad configuration, or a damaged or unreadable database or file, ends a
    command in one line naming it, not in a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
        except LogShrunk as exc:
            raise click.ClickException(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise click.ClickException(f"database: {exc}") from None
        except StorageUnavailable as exc:
            raise click.ClickException(f"database: {exc.message}") from None
        except OSError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_OperatorErrors, help="Operate a hashchain keyserver.")
def main() -> None:
    pass


@main.command("init")
@click.option("--instance", "instance_path", envvar="KEYSERVER_INSTANCE", required=True,
              type=click.Path(file_okay=False), help="Folder to create the instance in.")
@click.option("--server-name", required=True, help="DNS name of the server (no port).")
@click.option("--url", "base_url", required=True, help="Public base URL, e.g. https://keys.example.org")
@click.option("--domain", "domains", multiple=True,
              help="Domain whose identities it serves (repeatable; default: the server name).")
def init_command(instance_path: str, server_name: str, base_url: str, domains: tuple[str, ...]):
    """Create an instance: config, signing key, database and chain entry 0."""
    from .instance import InstanceExists, init_instance

    try:
        app = init_instance(instance_path, server_name, base_url, list(domains) or [server_name])
    except (InstanceExists, ValueError, ProtocolError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created keyserver instance for {app.config['KEYSERVER_NAME']} in "
               f"{app.instance_path}")


@main.command("run")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@with_serving_instance
def run_command(host: str, port: int) -> None:
    """Serve the instance with Flask's threaded server (use gunicorn in production)."""
    import logging
    import socket

    from werkzeug.serving import make_server, select_address_family

    app = current_app._get_current_object()
    # Bound before "Serving" is said: a busy port is an error, never a false announcement.
    try:
        listening = socket.create_server((host, port),
                                         family=select_address_family(host, port))
    except OSError as exc:
        busy = " (is another server running there? choose another --port)" \
            if exc.errno == errno.EADDRINUSE else ""
        raise click.ClickException(
            f"cannot listen on {host}:{port}: "
            f"{os.strerror(exc.errno) if exc.errno else exc}{busy}") from None
    with listening:
        server = make_server(host, port, app, threaded=True, fd=listening.fileno())
    click.echo(f"Serving keyserver {app.config['KEYSERVER_NAME']} on http://{host}:{port}/ "
               f"(instance {app.instance_path})")
    sys.stdout.flush()
    # Werkzeug's request lines name the path (identities, sigkeyhashes): the app logs
    # each request itself, without it (http/observe.py).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server.serve_forever()


@main.command("worker")
@click.option("--once", is_flag=True, help="Run the duties once and exit.")
@with_serving_instance
def worker_command(once: bool) -> None:
    """Run the server's periodic duties: a checkpoint every CHECKPOINT_INTERVAL when
    the chain grew, and the witnesses asked to cosign it; renewing its own UIDMessage
    and retiring expired token keys every WORKER_INTERVAL. Safe to run twice by
    mistake."""
    import threading
    import time

    from .service import duties
    from .service.signing import key_file_path, read_log_key

    app = current_app._get_current_object()
    log_key = read_log_key(key_file_path(app.instance_path, app.config["LOG_KEY_FILE"]))
    tick, daily = app.config["CHECKPOINT_INTERVAL"], app.config["WORKER_INTERVAL"]
    click.echo("keyserver worker: running the duties once" if once else
               f"keyserver worker for {app.config['KEYSERVER_NAME']}: checkpoints every "
               f"{tick / 1000:g} s, other duties every {daily / 1000:g} s")
    sys.stdout.flush()   # said before any work: a supervisor's log shows it started
    last_daily = None
    cosigners: dict[str, threading.Thread] = {}
    while True:
        now = now_ms()
        done = duties.checkpoint(db.get_db(), log_key, tick, now)
        if last_daily is None or now - last_daily >= daily:
            done += duties.run(db.get_db(), policy(), server_keys(), now)
            last_daily = now
        for line in done:
            click.echo(line)
        sys.stdout.flush()
        if once:
            _cosign_round(app, now)
            return
        # Witnesses are asked beside the loop, each in a thread of its own: a slow one
        # delays neither the checkpoints nor the other witnesses.
        for name in policy().cosigning.witnesses:
            if name not in cosigners or not cosigners[name].is_alive():
                cosigners[name] = threading.Thread(target=_cosign_round,
                                                   args=(app, now, [name]), daemon=True)
                cosigners[name].start()
        time.sleep(tick / 1000)


def _cosign_round(app: Flask, now: int, witnesses: list[str] | None = None) -> None:
    """Ask the witnesses (by default all) to cosign the newest checkpoint (§8.1), in an
    app context of its own (its own database connection)."""
    from .service import duties

    with app.app_context():
        for line in duties.cosign(db.get_db(), policy(), now, witnesses):
            click.echo(line)
    sys.stdout.flush()


@click.group("keys", help="The server's signing keys, which sign its replies.")
def keys_group() -> None:
    pass


@keys_group.command("rotate")
@click.option("--overlap", default=None, help="How long the old key stays current, e.g. "
              "30m, 1h (default: KEY_ROTATION_OVERLAP, 1h).")
@with_instance
def keys_rotate_command(overlap: str | None) -> None:
    """Make a new signing key, installed on the chain by an update of keyserver@
    signed by the old key; running workers sign with it at once."""
    from .service.serverkeys import RotationRefused, rotate

    overlap_ms = parse_duration(overlap) if overlap else policy().key_rotation_overlap_ms
    now = now_ms()
    try:
        key = rotate(db.get_db(), key_file(), policy(), overlap_ms, now)
    except RotationRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"new signing key {key.key_id}; the previous key stays current until "
               f"{_iso(now + overlap_ms)}")


@keys_group.command("list")
@with_instance
def keys_list_command() -> None:
    """The signing keys with their windows."""
    from .storage.signingkeys import windows

    now = now_ms()
    for window in windows(db.get_db()):
        if window.expired_ts is None:
            state = "signing"
        elif now < window.expired_ts:
            state = f"current (overlap) until {_iso(window.expired_ts)}"
        else:
            state = f"expired {_iso(window.expired_ts)}"
        click.echo(f"{window.key_id}  {b64encode(window.pubkey)}  since "
                   f"{_iso(window.created_ts)}  {state}")


@click.group("chain", help="Inspect and load the hashchain.")
def chain_group() -> None:
    pass


@chain_group.command("verify")
@with_instance
def chain_verify_command() -> None:
    """Recompute every link of the stored chain and report the first bad position;
    check that entry 0 is this server's own (KEYSERVER_NAME); recompute the stored
    Merkle tree from the entries and report its first bad node."""
    length = verify_instance(db.get_db(), policy().server_name)
    click.echo(f"chain OK: {length} entries; Merkle tree OK")


def verify_instance(database: db.Database, server_name: str) -> int:
    """``chain verify``'s checks; the chain's length, or ``ClickException``."""
    try:
        length = chain.verify_stored(database)
    except ChainError as exc:
        raise click.ClickException(f"chain broken at position {exc.position}: {exc}") from None
    own = server_identity(server_name)
    if open_entry(chain.entry_at(database, 0).entry, own) is None:
        raise click.ClickException(f"entry 0 is not {own}'s: KEYSERVER_NAME does not match the"
                                   " name this instance was created with")
    try:
        tree.verify_stored(database, length)
    except tree.BadNode as exc:
        raise click.ClickException(f"Merkle tree broken: {exc}") from None
    return length


@main.command("backup")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--instance", "instance_path", envvar="KEYSERVER_INSTANCE",
              type=click.Path(file_okay=False), metavar="PATH",
              help="Instance folder (default: $KEYSERVER_INSTANCE).")
def backup_command(dest: str, instance_path: str | None) -> None:
    """Copy the running instance to the new folder DEST: the database by SQLite's
    online backup API (writers go on), then config and keys (not the witness key: a
    restore makes a new one); DEST/backup.json records the chain length and largest
    checkpoint it holds."""
    from .backup import BackupRefused, backup

    app = _open_instance(instance_path)
    try:
        holds = backup(app.instance_path, dest, app.config["DATABASE"],
                       app.config["REQUEST_WAIT_BOUND"] / 1000, app.config["WITNESS_KEY_FILE"])
    except BackupRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backup of {app.instance_path} in {dest}: chain length {holds.chain_length}, "
               f"checkpoint tree size {holds.checkpoint_size}")


@main.command("restore")
@click.argument("backup_folder", metavar="BACKUP", type=click.Path(file_okay=False, exists=True))
@click.option("--instance", "instance_path", envvar="KEYSERVER_INSTANCE", required=True,
              type=click.Path(file_okay=False), metavar="PATH",
              help="New instance folder to restore into.")
@click.option("--published-size", type=click.IntRange(0), default=None,
              help="Largest tree size the lost instance published (from its published_size"
                   " file, its witnesses or monitors), if larger than the backup knew.")
@click.option("--accept-shorter-log", is_flag=True,
              help="Serve the restored chain even if the log published a larger tree: the "
                   "decision is recorded in published_shrinks, and clients, monitors and "
                   "witnesses that saw the larger tree will report this log as forked.")
def restore_command(backup_folder: str, instance_path: str, published_size: int | None,
                    accept_shorter_log: bool) -> None:
    """Make a new instance folder from BACKUP, then verify its chain. It refuses to
    serve when its chain is shorter than the largest tree size the log published,
    unless the operator accepts the shorter log (see README, Production, Backups)."""
    from .backup import BackupRefused, restore

    try:
        holds = restore(backup_folder, instance_path, published_size, accept_shorter_log)
    except BackupRefused as exc:
        raise click.ClickException(str(exc)) from None
    app = _open_instance(instance_path)
    with app.app_context():
        length = verify_instance(db.get_db(), policy().server_name)
        vkey = format_verifier_key(witness().vkey)
    click.echo(f"restored {backup_folder} into {app.instance_path}: chain OK, {length} "
               "entries; Merkle tree OK")
    click.echo(f"the witness has a new key, {vkey}: its memory went back to the backup's, "
               "and under its old key it may have cosigned more since")
    if holds.witnessed_logs:
        click.echo(
            f"warning: this instance witnessed {holds.witnessed_logs} log(s); it forgot their "
            "checkpoints and cosigns only under the new key. Give the new key to those logs"
            " (their WITNESSES) and to the clients that trust this witness ('keyclient "
            "witness add'), and have them drop the old one.", err=True)
    if holds.shrunk_from is not None:
        click.echo(
            f"warning: the log had published a tree of size {holds.shrunk_from}; this instance"
            f" serves {length} entries in its place, as the operator accepted (recorded in "
            "published_shrinks). The entries from position "
            f"{length} on that clients saw are gone and new ones take their positions: "
            "clients, monitors and witnesses that saw the larger tree will report this "
            "server as having forked its log. Tell the users to register again.", err=True)
    elif holds.published_size is not None and holds.published_size > length:
        raise click.ClickException(
            f"the log already published a tree of size {holds.published_size}, more than "
            f"the {length} entries restored: this instance refuses to serve (a published "
            "log must never shrink). Restore a newer backup; or restore this one again, "
            "into a new folder, with --accept-shorter-log (clients that saw the larger "
            "tree will report a fork); or start a new log under a new server name with "
            "'keyserver init'")


@chain_group.command("load")
@click.option("-n", "count", type=click.IntRange(1), required=True,
              help="Number of synthetic identities to append.")
@click.option("--domain", help="Domain of the identities (default: the first served one).")
@with_instance
def chain_load_command(count: int, domain: str | None) -> None:
    """Append N real UIDMessages of generated identities (benchmarks, tests)."""
    from .loadgen import load

    served = policy().domains
    if domain is not None and domain not in served:
        raise click.BadParameter(f"{domain!r} is not served here ({', '.join(served)}):"
                                 " the chain cannot take its entries back", param_hint="--domain")
    database = db.get_db()
    with click.progressbar(length=count, label="appending") as bar:
        length = load(database, sign, count, domain or served[0], progress=bar.update)
    click.echo(f"chain length now {length}")


@click.group("tiles", help="The log as static tiles (C2SP tlog-tiles) for a CDN.")
def tiles_group() -> None:
    pass


@tiles_group.command("export")
@click.argument("folder", type=click.Path(file_okay=False))
@with_instance
def tiles_export_command(folder: str) -> None:
    """Write the tiles of the newest checkpoint's tree and the checkpoint to FOLDER,
    the files the server serves under /tile/ and /checkpoint, for a static web server
    (set TILES_URL to where it serves them). Full tiles already there are kept."""
    from client.protocol.errors import NotFound

    from .service import tiles

    try:
        done = tiles.export(db.get_db(), folder)
    except NotFound:
        raise click.ClickException("no checkpoint yet: run 'keyserver worker' first") from None
    click.echo(f"exported the tree of size {done.tree_size} to {folder}: {done.written} "
               f"files written, {done.kept} full tiles kept, checkpoint last")


@click.group("keyinits", help="The KeyInit repository.")
def keyinits_group() -> None:
    pass


@keyinits_group.command("purge")
@with_instance
def keyinits_purge_command() -> None:
    """Delete every expired KeyInit of every identity (requests purge only those of
    the identity they touch)."""
    database = db.get_db()
    with db.transaction(database):
        purged = keyinits.purge_expired(database, now_ms())
    click.echo(f"purged {purged} expired KeyInit(s)")


_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` as milliseconds (more than none, and at most
    999,999 units: a voucher that is born expired, or outlives the machine, is a typo)."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r}: use a number from 1 to 999999 and a unit:"
                                 " 30d, 12h, 90m, 45s")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def _iso(ts: int | None) -> str:
    return "never" if ts is None else format_ms(ts)


@click.group("tokens", help="Payment token keys, minting and statistics.")
def tokens_group() -> None:
    pass


@tokens_group.command("mint")
@click.option("-n", "count", type=click.IntRange(1, 100_000), required=True,
              help="Number of tokens to mint.")
@with_instance
def tokens_mint_command(count: int) -> None:
    """Print N ready tokens, one base64url string a line (giveaways, tests)."""
    database = db.get_db()
    key = tokenkeys.issuing_key(database, now_ms())
    if key is None:
        raise click.ClickException("no valid token key: run 'keyserver tokens rotate-key'")
    private = token_keyring().private_key(key)
    lines = [b64url_encode(mint_token(private, payment.challenge(policy())).to_bytes())
             for _ in range(count)]
    with db.transaction(database):
        db.count(database, "tokens_minted", count)
    click.echo("\n".join(lines))


@tokens_group.command("rotate-key")
@with_instance
def tokens_rotate_command() -> None:
    """Add a new issuing token key and list it on the chain with the newest previous
    one (clients buy only under a key listed for 24 hours; keys no longer listed
    stop being redeemed)."""
    key = tokenkeys.rotate(db.get_db(), current_app.instance_path, policy(), server_keys(),
                           now_ms())
    click.echo(f"new token key {b64encode(key.key_id)} valid until {_iso(key.not_after_ts)};"
               " listed on the chain now: clients buy with it from 24 hours on")


@tokens_group.command("retire-expired")
@with_instance
def tokens_retire_command() -> None:
    """Take expired token keys off the chain's list of the keys the server redeems."""
    retired = tokenkeys.retire_expired(db.get_db(), policy(), server_keys(), now_ms())
    click.echo("expired token keys retired from the chain" if retired else
               "no listed token key has expired")


@tokens_group.command("stats")
@with_instance
def tokens_stats_command() -> None:
    """Token keys, and how many tokens were issued, minted and spent."""
    database = db.get_db()
    now = now_ms()
    listed = set(own.current(database).token_keys)
    issuing = tokenkeys.issuing_key(database, now)
    for key in all_keys(database):
        state = "valid" if now < key.not_after_ts else "expired"
        where = "listed on the chain" if key.key_id in listed else "not listed: not redeemed"
        issues = ", ISSUING: vouchers and mint sign with it" \
            if issuing is not None and key.key_id == issuing.key_id else ""
        click.echo(f"key {b64encode(key.key_id)}  {state} until {_iso(key.not_after_ts)}"
                   f" ({where}{issues})")
    if issuing is None:
        click.echo("no key issues tokens: run 'keyserver tokens rotate-key'")
    spent = spent_count(database)
    outstanding = sum(v.remaining for v in vouchers.listing(database) if v.revoked_ts is None
                      and (v.expires_ts is None or now < v.expires_ts))
    click.echo(f"issued via vouchers: {db.get_state(database, 'tokens_issued', 0)}")
    click.echo(f"minted: {db.get_state(database, 'tokens_minted', 0)}")
    click.echo(f"spent: {spent}")
    click.echo(f"unredeemed on valid vouchers: {outstanding}")


@click.group("vouchers", help="Voucher codes that buy tokens.")
def vouchers_group() -> None:
    pass


@vouchers_group.command("create")
@click.option("--tokens", "tokens", type=click.IntRange(1, 1_000_000), required=True,
              help="Tokens each voucher is worth.")
@click.option("--count", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="How many vouchers.")
@click.option("--expires", default="30d", show_default=True,
              help="Validity: 30d, 12h, ... or 'never'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@with_instance
def vouchers_create_command(tokens: int, count: int, expires: str, as_json: bool) -> None:
    """Print new voucher codes, each with its label (the codes are shown once: only
    their hashes are stored; 'vouchers list' and 'vouchers revoke' name a voucher by
    its label)."""
    now = now_ms()
    expires_ts = None if expires == "never" else now + parse_duration(expires)
    database = db.get_db()
    with db.transaction(database):
        made = [vouchers.create(database, tokens, now, expires_ts) for _ in range(count)]
    if as_json:
        click.echo(json.dumps([{"code": v.code, "label": v.label, "tokens": tokens,
                                "expires_ts": expires_ts} for v in made], indent=2))
        return
    click.echo("\n".join(f"{v.code}  {v.label}" for v in made))
    click.echo(f"{count} voucher(s) of {tokens} token(s), valid until {_iso(expires_ts)}; "
               "each line: the code to sell, then its label", err=True)


@vouchers_group.command("list")
@with_instance
def vouchers_list_command() -> None:
    """Vouchers by label, with use and expiry (codes are never shown again)."""
    now = now_ms()
    listed = vouchers.listing(db.get_db())
    for v in listed:
        state = (f"REVOKED {_iso(v.revoked_ts)}" if v.revoked_ts is not None else
                 "expired" if v.expires_ts is not None and now >= v.expires_ts else "valid")
        click.echo(f"{v.label}  {v.tokens - v.remaining}/{v.tokens} used  {state}, "
                   f"expires {_iso(v.expires_ts)}, created {_iso(v.created_ts)}")
    if not listed:
        click.echo("no vouchers yet: 'keyserver vouchers create --tokens N' makes some")


@vouchers_group.command("revoke")
@click.argument("label")
@with_instance
def vouchers_revoke_command(label: str) -> None:
    """Make the voucher LABEL buy nothing more (a code sold by mistake, or leaked);
    the tokens it already bought stay valid."""
    database = db.get_db()
    with db.transaction(database):
        found = vouchers.revoke(database, label, now_ms())
    if not found:
        raise click.ClickException(f"no voucher labelled {label!r}: 'keyserver vouchers list'"
                                   " shows the labels")
    click.echo(f"revoked voucher {label}: it buys no more tokens")


@click.group("witness", help="Witnessing: other logs' checkpoints this server cosigns, "
             "and the witnesses that cosign this log's.")
def witness_group() -> None:
    pass


@witness_group.command("key")
@with_instance
def witness_key_command() -> None:
    """Print the witness's name, then its verifier key: what a log's WITNESSES and
    'keyclient witness add NAME KEY' take."""
    vkey = witness().vkey
    click.echo(vkey.name)
    click.echo(format_verifier_key(vkey))


@witness_group.command("list")
@with_instance
def witness_list_command() -> None:
    """Every log this server witnesses (WITNESS_LOGS): its keys, the size it cosigned
    last and when, and how many of its requests were kept as evidence."""
    logs = policy().witness_logs
    database = db.get_db()
    held, evidence = witness_store.listing(database), witness_store.evidence_counts(database)
    if not logs:
        click.echo("this server witnesses no log: WITNESS_LOGS is empty")
    for origin in sorted(set(logs) | set(held) | set(evidence)):
        state = held.get(origin)
        click.echo(origin if origin in logs else f"{origin}  (no longer in WITNESS_LOGS)")
        for key in logs.get(origin, ()):
            click.echo(f"  key {format_verifier_key(key)}")
        click.echo("  cosigned: nothing yet" if state is None else
                   f"  cosigned: size {state.tree_size}, {_iso(state.updated_ts)}")
        click.echo(f"  evidence: {evidence.get(origin, 0)} request(s) kept")


@witness_group.command("status")
@with_instance
def witness_status_command() -> None:
    """The witnesses this log asks to cosign its checkpoints (WITNESSES), each with the
    size it last cosigned, its last success, its failures and when it is asked next."""
    from .storage.cosignatures import state

    witnesses = policy().cosigning.witnesses
    if not witnesses:
        click.echo("no witnesses configured (WITNESSES is empty): checkpoints are not "
                   "cosigned, and clients that require a quorum do not trust this log")
        return
    now = now_ms()
    for name, asked in witnesses.items():
        known = state(db.get_db(), name)
        failing = (f"{known.failures} failure(s) in a row, last: {known.last_error}"
                   if known.failures else "no failures")
        due = "now" if known.next_attempt_ts <= now else _iso(known.next_attempt_ts)
        click.echo(f"{name}  {asked.url}  cosigned size {known.cosigned_size}  last "
                   f"success {_iso(known.last_success_ts)}  {failing}  next attempt {due}")


GROUPS = (chain_group, keyinits_group, keys_group, tiles_group, tokens_group, vouchers_group,
          witness_group)
for _group in GROUPS:
    main.add_command(_group)


def init_app(app: Flask) -> None:
    for group in GROUPS:
        app.cli.add_command(group)
