"""``keyclient``: the user's command line over the client library.

Each command parses its options, calls the library and echoes; the protocol's
and the client's exceptions become a message and exit status 1 in one place.
"""

from __future__ import annotations

import datetime
import os

import click

from .accounts import register
from .api import KeyserverAPI
from .encoding import b64encode, b64url_decode, now_ms
from .errors import ChainError, ClientError, ProtocolError
from .home import Home, default_home
from .identity import normalize_identity
from .keystore import Keystore, passphrase_from_env_or_prompt
from .lookup import lookup
from .uidrules import Limits


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ChainError as exc:
            raise click.ClickException(
                f"the chain failed verification and was rejected whole: {exc}") from None
        except (ProtocolError, ClientError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, help="Find and publish keys on hashchain keyservers.")
@click.option("--home", envvar="KEYCLIENT_HOME", type=click.Path(file_okay=False),
              default=default_home, show_default="a per-user data directory",
              help="Folder of the client's state (or $KEYCLIENT_HOME).")
@click.pass_context
def main(ctx: click.Context, home: str) -> None:
    ctx.obj = Home(home)


@main.group("server", help="The keyservers this client knows.")
def server_group() -> None:
    pass


@server_group.command("add")
@click.argument("url")
@click.pass_obj
def server_add(home: Home, url: str) -> None:
    """Remember the keyserver at URL (its capabilities' signature is checked)."""
    name = home.add_server(url)
    click.echo(f"added {name} at {url}")


@server_group.command("list")
@click.pass_obj
def server_list(home: Home) -> None:
    """The remembered keyservers, with how much of their chain is verified here."""
    for name, url in home.servers():
        click.echo(f"{name}  {url}  {home.chain(name).length} entries verified")


@main.command("sync")
@click.argument("server", required=False)
@click.pass_obj
def sync(home: Home, server: str | None) -> None:
    """Download and verify SERVER's chain from the last verified position (all
    remembered servers if none is named)."""
    servers = [(name, url) for name, url in home.servers() if server in (None, name)]
    if not servers:
        _one_server(home, server)   # raises the right message
    for name, url in servers:
        chain = home.chain(name)
        api = KeyserverAPI(url)
        head = api.fetch_head()["pos"] + 1
        with click.progressbar(length=max(head - chain.length, 0),
                               label=f"syncing {name}") as bar:
            added = chain.sync(api, progress=bar.update)
        click.echo(f"{name}: {added} new entries, {chain.length} verified")


def _one_server(home: Home, server: str | None) -> tuple[str, str]:
    servers = [(name, url) for name, url in home.servers() if server in (None, name)]
    if len(servers) != 1:
        raise click.ClickException(
            "name the server with --server" if servers else
            f"unknown server {server!r}: add it with 'keyclient server add URL'" if server else
            "no servers yet: add one with 'keyclient server add URL'")
    return servers[0]


@main.command("lookup")
@click.argument("identity")
@click.option("--server", help="Keyserver name (needed when several are known).")
@click.pass_obj
def lookup_command(home: Home, identity: str, server: str | None) -> None:
    """Sync, search the whole chain for IDENTITY, verify every message of it and
    print its current keys. Exit status 1 when it is not on the chain."""
    identity = normalize_identity(identity)
    name, url = _one_server(home, server)
    api = KeyserverAPI(url)
    chain = home.chain(name)
    chain.sync(api)
    result = lookup(api, chain, name, identity, Limits.from_capabilities(api.capabilities()))
    if result is None:
        click.echo(f"{identity}: not found on {name} ({chain.length} entries searched)")
        raise SystemExit(1)
    message = result.message
    status = "current" if result.is_current(now_ms()) else "EXPIRED: do not use these keys"
    click.echo(f"{identity}: {status}")
    click.echo(f"  positions:  {', '.join(str(found.pos) for found in result.history)}")
    click.echo(f"  msgcount:   {message.msgcount}")
    click.echo(f"  valid:      {_iso(message.not_before_ts)} .. {_iso(message.not_after_ts)}")
    click.echo(f"  sigkey:     {b64encode(message.sigkey.pubkey)}")
    escrow = b64encode(message.sigescrow.pubkey) if message.sigescrow else "none"
    click.echo(f"  sigescrow:  {escrow}")
    for key in message.pubkeys:
        click.echo(f"  pubkey:     {b64encode(key.pubkey)} ({key.function})")
    click.echo(f"  repouris:   {', '.join(message.repouris) or 'none'}")


def _iso(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


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
@click.option("--server", help="Keyserver name (needed when several are known).")
@click.pass_obj
def tokens_buy(home: Home, voucher: str, count: int, server: str | None) -> None:
    """Exchange VOUCHER for N unlinkable tokens (blind issuance)."""
    name, url = _one_server(home, server)
    with home.wallet() as wallet:
        remaining = wallet.buy(KeyserverAPI(url), voucher, count)
    click.echo(f"bought {count} token(s) for {name}; the voucher has {remaining} left")


@tokens_group.command("list")
@click.pass_obj
def tokens_list(home: Home) -> None:
    """Tokens per server and state."""
    with home.wallet() as wallet:
        for name, _ in home.servers():
            counts = wallet.count(name)
            click.echo(f"{name}: {counts.get('available', 0)} available"
                       + "".join(f", {n} {state}" for state, n in sorted(counts.items())
                                 if state != "available"))


def _keystore(home: Home) -> Keystore:
    path = os.path.join(home.path, "keys")
    new = not os.path.isdir(path) or not os.listdir(path)
    keystore = Keystore(path, passphrase_from_env_or_prompt(click.prompt, confirm=new))
    keystore.check_passphrase()
    return keystore


@main.command("register")
@click.argument("identity")
@click.option("--server", help="Keyserver name (needed when several are known).")
@click.option("--escrow-out", type=click.Path(dir_okay=False, writable=True),
              help="Write the escrow key's paper backup to this file instead of printing it.")
@click.option("--yes", is_flag=True, help="Do not ask whether the paper backup is saved.")
@click.pass_obj
def register_command(home: Home, identity: str, server: str | None, escrow_out: str | None,
                     yes: bool) -> None:
    """Register IDENTITY (§13): a new signing key, an escrow key on paper, paid with a
    token from the wallet, confirmed on the chain."""
    identity = normalize_identity(identity)
    name, url = _one_server(home, server)
    keystore = _keystore(home)

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

    result = register(home, name, url, identity, keystore, deliver_paper=deliver,
                      confirm=confirm, progress=lambda step: click.echo(f"... {step}"))
    click.echo(f"registered {identity} on {name} at position {result.pos}; the escrow "
               "key is now only on your backup")
