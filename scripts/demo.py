"""The use case of the spec (§13) end to end, with the real command-line tools.

Starts a fresh keyserver on a free local port with its background worker, and a
second keyserver that witnesses its log (the worker has each checkpoint cosigned)
and notarizes its keys. The operator sells a voucher (which a client refuses to use
for a day: the token key is new on the chain, §10.4) and gives tokens; then Alice
(her own client home) registers, publishes KeyInits and checks her entry, and Bob
(another home, trusting the second server as notary and witness) finds her on the
witnessed chain and fetches and opens one of her KeyInits; finally Alice rotates her
key and recovers it with the paper escrow key, and Bob sees each change. Every step
prints the command it runs and its output; the first failing step ends the demo
with exit status 1.
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
WITNESS_SERVER = "witness.test"
ALICE = f"alice@{SERVER}"


class StepFailed(Exception):
    pass


class Demo:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.instance = workdir / "instance"
        self.witness_instance = workdir / "witness-instance"
        self.port, self.witness_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.witness_url = f"http://127.0.0.1:{self.witness_port}"
        self.processes: dict[str, subprocess.Popen] = {}
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

    def start(self, name: str, *args: str | Path, url: str | None = None) -> None:
        """Start ``keyserver *args`` in the background (output in ``<name>.log``);
        with ``url``, wait until it serves there."""
        log = open(self.workdir / f"{name}.log", "wb")
        process = self.processes[name] = subprocess.Popen(
            [BIN / "keyserver", *args], stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200 if url else 0):
            try:
                urllib.request.urlopen(url + "/v1/hashchain/head", timeout=1).close()
                click.echo(f"    {name} serving on {url}")
                return
            except urllib.error.URLError:
                if process.poll() is not None:
                    break
                time.sleep(0.05)
        if url:
            raise StepFailed(f"{name} did not start (see {self.workdir / f'{name}.log'})")

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            process.terminate()
            process.wait(10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def start_servers(self) -> None:
        """The keyserver, and a second one (witness.test) that witnesses its log and
        notarizes its keys; the keyserver's worker has the witness cosign each
        checkpoint."""
        keyserver = BIN / "keyserver"
        self.step("The operators create two keyservers: demo.test, and witness.test, which"
                  " witnesses demo.test's log (§8.1) and notarizes its keys (§11.4)")
        self.run("operator", keyserver, "init", "--instance", self.instance,
                 "--server-name", SERVER, "--url", self.url, "--domain", SERVER)
        self.run("operator", keyserver, "init", "--instance", self.witness_instance,
                 "--server-name", WITNESS_SERVER, "--url", self.witness_url)
        self.witness_name, self.witness_key = self.run(
            "operator", keyserver, "witness", "key", "--instance", self.witness_instance
        ).split()
        with open(self.instance / "config.py", "a") as config:
            config.write(f"WITNESSES = {{{self.witness_name!r}: {{'url': "
                         f"{self.witness_url + '/witness'!r}, 'vkey': {self.witness_key!r}}}}}\n"
                         "CHECKPOINT_INTERVAL = 500\n")
        self.start("demo.test", "run", "--instance", self.instance, "--port", str(self.port),
                   url=self.url)
        log_vkey = json.loads(urllib.request.urlopen(self.url + "/v1/capabilities").read()
                              )["log_vkey"]
        with open(self.witness_instance / "config.py", "a") as config:
            config.write(f"WITNESS_LOGS = {{{f'{SERVER}/keyserver'!r}: [{log_vkey!r}]}}\n"
                         f"NOTARY_ORIGINS = {{{SERVER!r}: {self.url!r}}}\n")
        self.start("witness.test", "run", "--instance", self.witness_instance, "--port",
                   str(self.witness_port), url=self.witness_url)
        self.start("worker", "worker", "--instance", self.instance)

    def wait_until_witnessed(self) -> None:
        """Until the witness cosigned a checkpoint of the whole log (the worker asks it
        every half second)."""
        size = json.loads(urllib.request.urlopen(self.url + "/v1/hashchain/head").read()
                          )["pos"] + 1
        for _ in range(600):
            try:
                note = urllib.request.urlopen(
                    self.url + "/v1/hashchain/checkpoint?quorum=1").read().decode()
                if int(note.split("\n")[1]) >= size:
                    return
            except urllib.error.HTTPError:
                pass
            time.sleep(0.1)
        raise StepFailed("the witness did not cosign the log (see worker.log)")

    def scenario(self) -> None:
        self.start_servers()
        keyserver = [BIN / "keyserver"]
        paper = self.workdir / "alice-escrow.txt"

        self.step("The operator sells Alice a voucher worth 5 tokens")
        out = self.run("operator", *keyserver, "vouchers", "create", "--tokens", "5",
                       "--instance", self.instance)
        voucher = next(word for line in out.splitlines() for word in line.split()
                       if word.count("-") >= 3)

        self.step("Bob trusts witness.test: as a notary for the servers' keys, and as a "
                  "witness of demo.test's log (the key its operator gave him)")
        document = json.loads(urllib.request.urlopen(
            self.witness_url + "/_matrix/key/v2/server").read())
        [(key_id, key)] = document["verify_keys"].items()
        self.keyclient("bob", "notary", "add", WITNESS_SERVER, self.witness_url, key_id,
                       key["key"])
        self.keyclient("bob", "server", "add", self.url, expect=f"added {SERVER}")
        self.keyclient("bob", "witness", "add", self.witness_name, self.witness_key,
                       expect="quorum 1 of 1")

        self.step("1. Alice and Bob download and verify the chain")
        self.keyclient("alice", "server", "add", self.url, expect=f"added {SERVER}")
        for who in ("alice", "bob"):
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

        self.step("demo.test's worker has witness.test cosign its newest checkpoint")
        self.wait_until_witnessed()
        self.run("operator", *keyserver, "witness", "status", "--instance", self.instance,
                 expect=self.witness_name)

        self.step("4. Bob finds Alice on the chain, witnessed, and fetches one of her KeyInits")
        self.keyclient("bob", "lookup", ALICE,
                       expect=f"by {self.witness_name} (quorum 1)")
        fetched = json.loads(self.keyclient("bob", "keyinit", "fetch", ALICE))
        if fetched["identity"] != ALICE or not fetched["sessionanchor"]["pfkeys"]:
            raise StepFailed("the fetched KeyInit is not Alice's")

        self.step("Alice rotates her signing key, her 2 KeyInits left are published again "
                  "under the new key; Bob sees the update")
        self.keyclient("alice", "-v", "update", ALICE, expect="msgcount 1")
        self.keyclient("alice", "keyinit", "status", ALICE,
                       expect=f"{ALICE}: 2 KeyInit(s) and 0 fallback KeyInit(s) left")
        self.wait_until_witnessed()
        self.keyclient("bob", "-v", "lookup", ALICE, expect="msgcount:   1")

        self.step("Alice recovers with the paper escrow key (as if her key was stolen)")
        self.keyclient("alice", "-v", "recover", ALICE, "--escrow", paper, expect="msgcount 2")
        self.wait_until_witnessed()
        self.keyclient("bob", "-v", "lookup", ALICE, expect="msgcount:   2")
        self.keyclient("alice", "tokens", "list", expect=f"{SERVER}: 0 available, 5 spent")

        self.step("The server goes down: Bob's lookup says so, and --offline uses what he "
                  "verified")
        self.stop("demo.test")
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
        demo.stop_all()
        if keep:
            click.echo(f"\nthe demo's files are in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    click.secho("\nDEMO OK: every step of the use case worked", fg="green", bold=True)


if __name__ == "__main__":
    main()
