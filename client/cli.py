"""``keyclient``: the user's command line over the client library.

Each command parses its options, calls the library and echoes; the protocol's
and the client's exceptions become a message and exit status 1 in one place.
"""

from __future__ import annotations

import click

from .api import KeyserverAPI
from .errors import ChainError, ClientError, ProtocolError
from .home import Home, default_home


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
        raise click.ClickException(f"unknown server {server!r}: add it with "
                                   "'keyclient server add URL'" if server else
                                   "no servers yet: add one with 'keyclient server add URL'")
    for name, url in servers:
        chain = home.chain(name)
        api = KeyserverAPI(url)
        head = api.fetch_head()["pos"] + 1
        with click.progressbar(length=max(head - chain.length, 0),
                               label=f"syncing {name}") as bar:
            added = chain.sync(api, progress=bar.update)
        click.echo(f"{name}: {added} new entries, {chain.length} verified")
