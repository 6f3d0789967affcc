"""The use case of the spec (§13) end to end, with the real command-line tools.

Starts a fresh keyserver on a free local port, has the operator sell a voucher
(which a client refuses to use for a day: the token key is new on the chain, §10.4)
and give tokens; then Alice (her own client home) registers, publishes KeyInits and
checks her entry, and Bob (another home) finds her on the chain and fetches and
opens one of her KeyInits; finally Alice rotates her key and recovers it with
the paper escrow key, and Bob sees each change. Every step prints the command it
runs and its output; the first failing step ends the demo with exit status 1.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from ports import free_port

BIN = Path(sys.executable).parent
SERVER = "demo.test"
ALICE = f"alice@{SERVER}"


class StepFailed(Exception):
    pass


class Demo:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.instance = workdir / "instance"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen | None = None
        self.env = {**os.environ, "KEYCLIENT_PASSPHRASE": "demo passphrase"}

    def step(self, title: str) -> None:
        click.secho(f"\n== {title}", bold=True)

    def run(self, who: str, *args: str | Path, expect: str | None = None,
            refused: bool = False) -> str:
        """Run a command as ``who`` (operator, alice, bob); fail unless it succeeds
        (or, when ``refused``, fails) and prints ``expect``."""
        command = [str(arg) for arg in args]
        shown = " ".join(shlex.quote(part) for part in command)
        click.secho(f"[{who}] $ {shown}", fg="cyan")
        done = subprocess.run(command, env=self.env, capture_output=True, text=True)
        output = (done.stdout + done.stderr).rstrip()
        if output:
            click.echo("    " + output.replace("\n", "\n    "))
        if (done.returncode != 0) != refused:
            raise StepFailed(f"{shown} exited with {done.returncode}")
        if expect is not None and expect not in output:
            raise StepFailed(f"{shown} did not say {expect!r}")
        return done.stdout

    def keyclient(self, who: str, *args: str | Path, expect: str | None = None,
                  refused: bool = False) -> str:
        home = self.workdir / who
        return self.run(who, BIN / "keyclient", "--home", home, *args, expect=expect,
                        refused=refused)

    def start_server(self) -> None:
        self.step("The operator creates and starts a keyserver")
        self.run("operator", BIN / "keyserver", "init", "--instance", self.instance,
                 "--server-name", SERVER, "--url", self.url, "--domain", SERVER)
        log = open(self.workdir / "server.log", "wb")
        self.server = subprocess.Popen(
            [BIN / "keyserver", "run", "--instance", self.instance, "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url + "/v1/hashchain/head", timeout=1).close()
                click.echo(f"    serving on {self.url}")
                return
            except urllib.error.URLError:
                if self.server.poll() is not None:
                    break
                time.sleep(0.05)
        raise StepFailed(f"the server did not start (see {self.workdir / 'server.log'})")

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
            self.server = None

    def scenario(self) -> None:
        self.start_server()
        keyserver = [BIN / "keyserver"]
        paper = self.workdir / "alice-escrow.txt"

        self.step("The operator sells Alice a voucher worth 5 tokens")
        out = self.run("operator", *keyserver, "vouchers", "create", "--tokens", "5",
                       "--instance", self.instance)
        voucher = next(word for line in out.splitlines() for word in line.split()
                       if word.count("-") >= 3)

        self.step("1. Alice and Bob download and verify the chain")
        for who in ("alice", "bob"):
            self.keyclient(who, "server", "add", self.url, expect=f"added {SERVER}")
            self.keyclient(who, "sync", expect="verified")

        self.step("Alice tries to buy unlinkable tokens with the voucher: refused, since the "
                  "server's token key is not yet a day old on its chain (nobody else could "
                  "have seen it)")
        self.keyclient("alice", "tokens", "buy", voucher, "-n", "5", refused=True,
                       expect="listed on the chain less than 24 hours ago")
        self.step("So the operator gives her 5 tokens instead (a day later, the voucher works)")
        minted = self.run("operator", *keyserver, "tokens", "mint", "-n", "5",
                          "--instance", self.instance).split()
        self.keyclient("alice", "tokens", "add", *minted, expect="added 5 token(s)")

        self.step("2. Alice registers her pseudonym; the escrow key goes to paper")
        self.keyclient("alice", "register", ALICE, "--escrow-out", paper, "--yes",
                       expect=f"registered {ALICE}")

        self.step("3. Alice publishes KeyInits and checks her entry on the chain")
        self.keyclient("alice", "keyinit", "publish", ALICE, "-n", "3",
                       expect="published 3 KeyInit(s)")
        self.keyclient("alice", "lookup", ALICE, expect=f"{ALICE}: current")
        self.keyclient("alice", "verify", expect="1 of your replies match the chain")

        self.step("4. Bob finds Alice on the chain and fetches one of her KeyInits")
        self.keyclient("bob", "lookup", ALICE, expect=f"{ALICE}: current")
        fetched = json.loads(self.keyclient("bob", "keyinit", "fetch", ALICE))
        if fetched["identity"] != ALICE or not fetched["sessionanchor"]["pfkeys"]:
            raise StepFailed("the fetched KeyInit is not Alice's")

        self.step("Alice rotates her signing key, her 2 KeyInits left are published again "
                  "under the new key; Bob sees the update")
        self.keyclient("alice", "-v", "update", ALICE, expect="msgcount 1")
        self.keyclient("alice", "keyinit", "status", ALICE,
                       expect=f"{ALICE}: 2 KeyInit(s) and 0 fallback KeyInit(s) left")
        self.keyclient("bob", "-v", "lookup", ALICE, expect="msgcount:   1")

        self.step("Alice recovers with the paper escrow key (as if her key was stolen)")
        self.keyclient("alice", "-v", "recover", ALICE, "--escrow", paper, expect="msgcount 2")
        self.keyclient("bob", "-v", "lookup", ALICE, expect="msgcount:   2")
        self.keyclient("alice", "tokens", "list", expect=f"{SERVER}: 0 available, 5 spent")

        self.step("The server goes down: Bob's lookup says so, and --offline uses what he "
                  "verified")
        self.stop_server()
        self.keyclient("bob", "lookup", ALICE, expect="--offline", refused=True)
        self.keyclient("bob", "lookup", ALICE, "--offline", expect="last synced")


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo's folder (instance, homes, log).")
def main(keep: bool) -> None:
    """Run the §13 use case against a fresh keyserver; exit 1 if any step fails."""
    workdir = Path(tempfile.mkdtemp(prefix="keyserver-demo-"))
    demo = Demo(workdir)
    try:
        demo.scenario()
    except StepFailed as exc:
        click.secho(f"\nDEMO FAILED: {exc}", fg="red", bold=True)
        sys.exit(1)
    finally:
        demo.stop_server()
        if keep:
            click.echo(f"\nthe demo's files are in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    click.secho("\nDEMO OK: every step of the use case worked", fg="green", bold=True)


if __name__ == "__main__":
    main()
