"""Shared fixtures: a fresh instance per test, the Flask ``app``/``client``/``runner``,
``app_server`` (a keyserver in-process, every client object of the test reaching
it through ``simulator.AppFetcher``) and ``live_server`` (a real ``keyserver run``
process on 127.0.0.1, for the end-to-end tests)."""

from __future__ import annotations

import copy
import datetime
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import gunicorn.config
import nacl.signing
import pytest
import requests
from click.testing import CliRunner
from freezegun import freeze_time

from client.clock import now_ms
from client.cli import main
from client.protocol.encoding import b64decode, b64encode, sha256
from client.protocol.hashchain import ZERO_HASH, format_entry, open_entry
from client.protocol.keys import ed25519_entry
from client.protocol.tokens import (format_authorization, parse_spki, prepare_blinded_tokens,
                                    token_challenge)
from client.protocol.uidmessage import (build_uid_content, decrypt_uid_message,
                                        parse_uid_message, sign_uid_content)
from keyserver import create_app
from keyserver.instance import init_instance

VECTORS = Path(__file__).parent / "vectors"
SERVER_NAME = "example.org"


@pytest.fixture(scope="session")
def vectors() -> dict:
    """``shared/spec/vectors.json``, committed beside the tests."""
    return json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))


#: Token keys of test instances outlive the far-future clocks of the expiry tests.
TEST_TOKEN_KEY_LIFETIME = str(20 * 365 * 24 * 3600 * 1000)


@pytest.fixture
def instance(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "instance"
    with monkeypatch.context() as patch:
        patch.setenv("KEYSERVER_TOKEN_KEY_LIFETIME", TEST_TOKEN_KEY_LIFETIME)
        init_instance(str(path), SERVER_NAME, "http://127.0.0.1:5000", [SERVER_NAME])
    return path


@pytest.fixture
def app(instance):
    return create_app({"TESTING": True}, instance_path=str(instance))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def state(tmp_path):
    """A fresh client state database (the home's ``state.sqlite``)."""
    from client.store.home import open_state

    return open_state(str(tmp_path / "state.sqlite"))


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def mutate(obj, path, value):
    """A deep copy of ``obj`` with the member at ``path`` set to ``value`` (or
    deleted, when ``value`` is ``KeyError``): one malformed variant per test case."""
    obj = copy.deepcopy(obj)
    target = obj
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


def run_together(count: int, action, prepare=None) -> list:
    """Run ``action(index)`` in ``count`` threads released at the same instant by a
    barrier (``prepare(index)`` runs before it, e.g. to connect); return the results."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(index):
        state = prepare(index) if prepare else None
        barrier.wait()
        results[index] = action(index) if prepare is None else action(index, state)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keyserver_command(*args: str) -> list[str]:
    """The installed ``keyserver`` console script, from the running interpreter's venv."""
    return [str(Path(sys.executable).parent / "keyserver"), *args]


class LiveServer:
    """A ``keyserver run`` process serving an instance on a free local port.

    It always stops what it started: a start that fails (the process exits, or
    does not answer in time) stops the process before raising, and the server is a
    context manager for fixtures and tests that start one."""

    #: How long a start may take: generous, since a loaded machine (a second suite
    #: beside this one) can take seconds to import and bind.
    START_TIMEOUT = 60.0

    def __init__(self, instance: Path, port: int | None = None):
        self.instance = instance
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = instance.parent / f"server-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), env=self.env(), stdout=self.log,
                                        stderr=subprocess.STDOUT)
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise

    def command(self) -> list[str]:
        return keyserver_command("run", "--instance", str(self.instance), "--port",
                                 str(self.port))

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        """Whether the server answers; subclasses add their own conditions."""
        try:
            requests.get(self.url + "/v1/hashchain/head", timeout=5)
        except requests.RequestException:
            # Refused while binding, or a read timeout while a worker boots.
            return False
        return True

    def _wait(self) -> None:
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            if self.ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.output()}")

    def mint(self, count: int) -> list[str]:
        """Tokens from ``keyserver tokens mint``, as Authorization header values."""
        result = subprocess.run(keyserver_command("tokens", "mint", "-n", str(count),
                                                  "--instance", str(self.instance)),
                                check=True, capture_output=True, text=True)
        return authorizations(result.stdout)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def __enter__(self) -> "LiveServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


WORKERS = 2
#: One access log line per request: "access <worker pid> <method> <path> <status>".
ACCESS_FORMAT = "access %(p)s %(m)s %(U)s %(s)s"
#: Newer gunicorns open a control socket in ~/.gunicorn, shared by every instance: not here.
NO_CONTROL_SOCKET = [cli for setting in gunicorn.config.KNOWN_SETTINGS
                     for cli in setting.cli or () if cli == "--no-control-socket"]


class GunicornServer(LiveServer):
    """``gunicorn -w 2 'keyserver:create_app()'`` on an instance, on a free local port;
    with ``threads``, gthread workers (which keep connections alive)."""

    def __init__(self, instance: Path, port: int, threads: int = 1):
        self.threads = threads
        super().__init__(instance, port)

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "gunicorn"), "-w", str(WORKERS),
                "--threads", str(self.threads), "-b", f"127.0.0.1:{self.port}",
                "--access-logfile", "-", "--access-logformat", ACCESS_FORMAT,
                *NO_CONTROL_SOCKET, "keyserver:create_app()"]

    def env(self) -> dict[str, str]:
        return {**os.environ, "KEYSERVER_INSTANCE": str(self.instance)}

    def ready(self) -> bool:
        """Answering means one worker is up; the races need all of them."""
        return self.output().count("Booting worker") >= WORKERS and super().ready()

    def workers_serving(self, method: str, path: str) -> set[str]:
        """The worker pids that answered ``method path`` so far."""
        return {fields[1] for fields in (line.split() for line in self.output().splitlines())
                if fields[:1] == ["access"] and fields[2:4] == [method, path]}


#: The production server's settings (deploy/keyserver.service reads the same file).
GRANIAN_ENV = Path(__file__).resolve().parent.parent / "deploy" / "granian.env"


def granian_settings() -> dict[str, str]:
    """deploy/granian.env's ``GRANIAN_*`` variables."""
    lines = GRANIAN_ENV.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


class GranianServer(LiveServer):
    """granian serving ``keyserver:create_app`` with deploy/granian.env's settings on a
    free local port; ``threads`` replaces its blocking threads per worker."""

    def __init__(self, instance: Path, port: int, threads: int | None = None):
        self.threads = threads
        super().__init__(instance, port)

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "granian"), "keyserver:create_app"]

    def env(self) -> dict[str, str]:
        return {**os.environ, **granian_settings(), "GRANIAN_PORT": str(self.port),
                **({"GRANIAN_BLOCKING_THREADS": str(self.threads)} if self.threads else {}),
                "KEYSERVER_INSTANCE": str(self.instance)}

    def ready(self) -> bool:
        """Answering means one worker is up; wait for all of them."""
        workers = int(granian_settings()["GRANIAN_WORKERS"])
        return self.output().count("Started worker") >= workers and super().ready()


def init_live_instance(path: Path) -> int:
    """``keyserver init`` an instance at ``path`` for a server on a free local port;
    return the port."""
    port = free_port()
    subprocess.run(
        keyserver_command("init", "--instance", str(path), "--server-name", SERVER_NAME,
                          "--url", f"http://127.0.0.1:{port}"),
        check=True, capture_output=True, env={**os.environ})
    return port


@pytest.fixture
def live_server(tmp_path):
    """A real server process on 127.0.0.1 whose instance was made by ``keyserver init``."""
    path = tmp_path / "live"
    with LiveServer(path, init_live_instance(path)) as server:
        yield server


def authorizations(minted: str) -> list[str]:
    """The output of ``keyserver tokens mint`` as Authorization header values."""
    return [f'PrivateToken token="{line}"' for line in minted.split()]


#: Where an in-process server is reached: nothing listens there (RFC 2606), so a
#: client object that missed the ``AppFetcher`` fails at once. https, since a sender
#: contacts a non-loopback KeyInit repository over https only (§9).
APP_URL = "https://keyserver.invalid"


class AppServer:
    """The in-process twin of ``LiveServer``: an instance made by ``init_instance``
    (as ``keyserver init`` makes it), its app from ``create_app``, reached through
    ``fetcher``. Operator commands run through the app's CLI runner, as
    ``keyserver <command> --instance`` would run them."""

    def __init__(self, instance: Path, url: str = APP_URL):
        from simulator import AppFetcher

        init_instance(str(instance), SERVER_NAME, url, [SERVER_NAME])
        self.instance, self.url = instance, url
        self.app = create_app({"TESTING": True}, instance_path=str(instance))
        self.fetcher = AppFetcher(self.app, url)

    def command(self, *args: str) -> str:
        """Run ``keyserver *args`` on the instance; return its standard output."""
        result = self.app.test_cli_runner().invoke(args=list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    def mint(self, count: int) -> list[str]:
        """Tokens from ``keyserver tokens mint``, as Authorization header values."""
        return authorizations(self.command("tokens", "mint", "-n", str(count)))

    def load_chain(self, count: int) -> None:
        """Grow the chain by ``count`` entries (``keyserver chain load``)."""
        self.command("chain", "load", "-n", str(count))

    def vouchers(self, tokens: int, count: int = 1) -> list[str]:
        """``count`` voucher codes worth ``tokens`` each (``keyserver vouchers create``)."""
        return create_vouchers(self.app.test_cli_runner(), tokens, count)


def serve_in_process(monkeypatch, instance: Path) -> AppServer:
    """An ``AppServer`` that every ``KeyserverAPI`` given no fetcher reaches, those
    the ``keyclient`` commands build included (the seam is
    ``client.transport.fetcher.default_fetcher``)."""
    import client.transport.fetcher as fetching

    server = AppServer(instance)
    monkeypatch.setattr(fetching, "default_fetcher", lambda: server.fetcher)
    return server


@pytest.fixture
def app_server(tmp_path, monkeypatch):
    """A keyserver without a process (see ``AppServer``)."""
    return serve_in_process(monkeypatch, tmp_path / "app")


def serve_for_years(monkeypatch, instance: Path) -> AppServer:
    """A ``serve_in_process`` server whose token key still works years on, and whose key
    documents cover the years too: a server dating replies ahead must publish
    documents that do, or its replies would not verify at all (§11.3), let alone
    count as evidence."""
    monkeypatch.setenv("KEYSERVER_TOKEN_KEY_LIFETIME", TEST_TOKEN_KEY_LIFETIME)
    monkeypatch.setenv("KEYSERVER_KEY_VALIDITY", str(5 * 365 * DAY_MS))
    return serve_in_process(monkeypatch, instance)


DAY_MS = 24 * 3600 * 1000


def at(ms: int, tick: bool = False):
    """Freeze the clock at exactly ``ms`` milliseconds since the epoch (``tick``: let
    it run on from there)."""
    seconds, millis = divmod(ms, 1000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return freeze_time(moment + datetime.timedelta(milliseconds=millis), tick=tick)


def a_day_later():
    """This process's clock a day and a minute ahead, running: a client buys tokens only
    under a key the chain has listed for 24 hours (§10.4), and a new server's first
    key was listed at its init."""
    return at(now_ms() + DAY_MS + 60_000, tick=True)


def mint(app, count: int | None = None):
    """Tokens minted with the app's issuing key, as ``keyserver tokens mint`` does."""
    from client.clock import now_ms
    from client.protocol.tokens import mint_token
    from keyserver.http.context import policy, token_keyring
    from keyserver.service import payment
    from keyserver.storage import db
    from keyserver.service.tokenkeys import issuing_key

    with app.app_context():
        private = token_keyring().private_key(issuing_key(db.get_db(), now_ms()))
        tokens = [mint_token(private, payment.challenge(policy())).to_bytes()
                  for _ in range(count or 1)]
    return tokens if count else tokens[0]


class Account:
    """A registered identity with its private keys and latest message."""

    def __init__(self, identity, sigkey, escrow, message, reply):
        self.identity, self.sigkey, self.escrow = identity, sigkey, escrow
        self.message, self.reply = message, reply


class UserActions:
    """Builds, signs and sends UIDMessages through a Flask test client or a base URL."""

    def __init__(self, client):
        self.client = client

    def lastentry(self) -> bytes:
        from client.protocol.encoding import b64decode

        return b64decode(self.client.get("/v1/hashchain/head").json["entry"])[:32]

    def create_message(self, identity, *, sigkey=None, escrow="new", now=None,
                       not_before_ts=None, not_after_ts=None, lastentry=None, **options):
        import nacl.signing

        from client.clock import now_ms
        from client.protocol.keys import ed25519_entry
        from client.protocol.uidmessage import build_uid_content, sign_uid_content

        now = now_ms() if now is None else now
        sigkey = sigkey or nacl.signing.SigningKey.generate()
        if escrow == "new":
            escrow = nacl.signing.SigningKey.generate()
        content = build_uid_content(
            identity, ed25519_entry(sigkey), msgcount=0,
            not_before_ts=now if not_before_ts is None else not_before_ts,
            not_after_ts=now + 300 * DAY_MS if not_after_ts is None else not_after_ts,
            lastentry=self.lastentry() if lastentry is None else lastentry,
            sigescrow=ed25519_entry(escrow) if escrow else None, **options)
        return sign_uid_content(content, sigkey, escrow_key=escrow or None), sigkey, escrow

    def update_message(self, account, *, new_sigkey=None, by="sigkey", now=None,
                       not_after_ts=None, lastentry=None, **changes):
        import nacl.signing

        from client.clock import now_ms
        from client.protocol.keys import ed25519_entry
        from client.protocol.uidmessage import parse_uid_message, sign_uid_content, update_uid_content

        now = now_ms() if now is None else now
        new_sigkey = new_sigkey or nacl.signing.SigningKey.generate()
        content = update_uid_content(
            parse_uid_message(account.message), ed25519_entry(new_sigkey), not_before_ts=now,
            not_after_ts=now + 300 * DAY_MS if not_after_ts is None else not_after_ts,
            lastentry=self.lastentry() if lastentry is None else lastentry, **changes)
        signer = {"sigkey": {"previous_sigkey": account.sigkey},
                  "escrow": {"escrow_key": account.escrow}}[by]
        return sign_uid_content(content, new_sigkey, **signer), new_sigkey

    def put(self, identity, message, path_identity=None, token="mint", **kwargs):
        """PUT the message, paying with a freshly minted token unless ``token`` is
        given (bytes, or None to send no Authorization header)."""
        headers = kwargs.pop("headers", {})
        if token == "mint":
            token = mint(self.client.application)
        if token is not None:
            headers["Authorization"] = format_authorization(token)
        return self.client.put(f"/v1/users/{path_identity or identity}",
                               json={"uid_message": message}, headers=headers, **kwargs)

    def register(self, identity, **options) -> Account:
        message, sigkey, escrow = self.create_message(identity, **options)
        response = self.put(identity, message)
        assert response.status_code == 201, response.json
        return Account(identity, sigkey, escrow, message, response.json)

    def update(self, account, **options) -> Account:
        message, sigkey = self.update_message(account, **options)
        response = self.put(account.identity, message)
        assert response.status_code == 200, response.json
        return Account(account.identity, sigkey, account.escrow, message, response.json)


@pytest.fixture
def users(client):
    return UserActions(client)


class ServerUserActions:
    """Registers identities on a server (live or in-process) through the client's
    ``KeyserverAPI``, paying with minted tokens."""

    def __init__(self, server):
        self.server = server

    def register(self, identity):
        import nacl.signing

        from client.transport.api import KeyserverAPI
        from client.clock import now_ms
        from client.protocol.keys import ed25519_entry
        from client.protocol.uidmessage import build_uid_content, sign_uid_content

        api = KeyserverAPI(self.server.url)
        sigkey = nacl.signing.SigningKey.generate()
        now = now_ms()
        content = build_uid_content(
            identity, ed25519_entry(sigkey), msgcount=0, not_before_ts=now,
            not_after_ts=now + 30 * DAY_MS, lastentry=api.fetch_head().entry[:32])
        return api.create_uid(sign_uid_content(content, sigkey), self.server.mint(1)[0]).raw


@pytest.fixture
def users_live(live_server):
    return ServerUserActions(live_server)


@pytest.fixture
def users_app(app_server):
    return ServerUserActions(app_server)


# --- Races against real servers ------------------------------------------------------

RACERS = 20


def head_hash(url):
    return b64decode(requests.get(url + "/v1/hashchain/head").json()["entry"])[:32]


def new_message(url, identity):
    sigkey, escrow = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    now = now_ms()
    content = build_uid_content(identity, ed25519_entry(sigkey), msgcount=0, not_before_ts=now,
                                not_after_ts=now + 30 * DAY_MS, lastentry=head_hash(url),
                                sigescrow=ed25519_entry(escrow))
    return sign_uid_content(content, sigkey, escrow_key=escrow), sigkey


def race(server, identity, messages):
    """PUT every message at once (one thread and one token each); return the answers."""
    tokens = server.mint(len(messages))

    def put(index):
        response = requests.put(f"{server.url}/v1/users/{identity}",
                                json={"uid_message": messages[index]},
                                headers={"Authorization": tokens[index]})
        return response.status_code, response.json()

    return run_together(len(messages), put)


def check_consistent(server, identity, expected_positions):
    verified = subprocess.run(keyserver_command("chain", "verify", "--instance",
                                                str(server.instance)),
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    conn = sqlite3.connect(server.instance / "keyserver.sqlite")
    chain_len = conn.execute("SELECT count(*) FROM chain").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM uids").fetchone()[0] == chain_len
    assert conn.execute("SELECT max(pos) + 1 FROM chain").fetchone()[0] == chain_len
    positions = [row[0] for row in conn.execute(
        "SELECT pos FROM history WHERE identity = ? ORDER BY seq", (identity,))]
    assert positions == expected_positions
    history_len, pos = conn.execute("SELECT history_len, pos FROM identities WHERE identity = ?",
                                    (identity,)).fetchone()
    assert history_len == len(expected_positions) and pos == expected_positions[-1]
    check_keyhashes(conn)


def check_keyhashes(conn):
    """``keyhashes`` maps exactly the keys of accepted messages to their identity: every
    identity's current sigkey and sigescrow, and the keys its earlier messages named
    (a key stays its identity's forever); no key of a refused message, nothing more."""
    stored = dict(conn.execute("SELECT keyhash, identity FROM keyhashes"))
    expected = {}
    for identity, sigkey, sigescrow in conn.execute(
            "SELECT identity, sigkey, sigescrow FROM identities").fetchall():
        for key in (sigkey, sigescrow):
            if key is not None:
                assert stored.get(sha256(key)) == identity, identity
        for (pos,) in conn.execute("SELECT pos FROM history WHERE identity = ?",
                                   (identity,)).fetchall():
            entry, encrypted = conn.execute(
                "SELECT c.entry, u.encrypted FROM chain c JOIN uids u ON u.pos = c.pos"
                " WHERE c.pos = ?", (pos,)).fetchone()
            message = parse_uid_message(decrypt_uid_message(encrypted,
                                                            open_entry(entry, identity)))
            expected.update((keyhash, identity) for keyhash in message.key_hashes)
    assert stored == expected


def registration(url, identity):
    from client.transport.api import KeyserverAPI

    head = KeyserverAPI(url).fetch_head().entry[:32]
    sigkey = nacl.signing.SigningKey.generate()
    now = now_ms()
    content = build_uid_content(identity, ed25519_entry(sigkey), msgcount=0, not_before_ts=now,
                                not_after_ts=now + DAY_MS, lastentry=head)
    return sign_uid_content(content, sigkey)


# --- Shared by several test modules ----------------------------------------------------

def keyclient(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *args])


@pytest.fixture
def cheap_keystore(monkeypatch):
    import client.store.keystore as keystore

    monkeypatch.setattr(keystore, "DEFAULT_KDF", keystore.KdfParams.cheapest())
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "correct horse")


def registered_home(live_server, tmp_path, tokens=1):
    home = tmp_path / "home"
    keyclient(home, "server", "add", live_server.url)
    if tokens:
        keyclient(home, "tokens", "add", *[t.split('"')[1] for t in live_server.mint(tokens)])
    return home


def registered_alice(server, tmp_path, tokens=3):
    """A home that registered alice@example.org through ``keyclient`` (escrow backup
    in tmp_path/escrow.txt) and holds ``tokens`` - 1 more tokens."""
    home = registered_home(server, tmp_path, tokens=tokens)
    result = keyclient(home, "register", "alice@example.org", "--escrow-out",
                       str(tmp_path / "escrow.txt"), "--yes")
    assert result.exit_code == 0, result.output
    return home


def create_vouchers(runner, tokens, count=1, expires="30d"):
    result = runner.invoke(args=["vouchers", "create", "--tokens", str(tokens), "--count",
                                 str(count), "--expires", expires])
    assert result.exit_code == 0, result.output
    codes = [line for line in result.stdout.split() if line.count("-") == 7]
    assert len(codes) == count
    return codes


def token_key(client):
    key = client.get("/v1/capabilities").json["token_keys"][0]
    return b64decode(key["key_id"]), parse_spki(b64decode(key["spki"]))


def issue(client, code, count, key_id=None):
    kid, public = token_key(client)
    pending = prepare_blinded_tokens(public, token_challenge("example.org"), count)
    response = client.post("/v1/tokens/issue", json={
        "voucher": code, "token_key_id": b64encode(key_id or kid),
        "blinded": [b64encode(p.blinded) for p in pending]})
    return response, pending, public


def make_chain(length):
    entries, prev = [], ZERO_HASH
    for n in range(length):
        entries.append(format_entry(prev, n.to_bytes(8, "big"), "a@example.org", bytes(32)))
        prev = entries[-1][:32]
    return entries


def fail_after(monkeypatch, module, name: str, error: BaseException) -> None:
    real = getattr(module, name)

    def run(*args, **kwargs):
        real(*args, **kwargs)
        raise error

    monkeypatch.setattr(module, name, run)


def with_cosignatures(note, signatures):
    """``note`` with ``signatures`` (cosignature lines) appended, those it already
    carries kept once: a note as a log serves it once witnesses cosigned it."""
    from client.protocol.checkpoint import Note

    extra = tuple(s for s in signatures if s not in note.signatures)
    return Note(note.checkpoint, note.body, note.signatures + extra)


def cosigners(note, witnesses) -> dict:
    """Witness name -> timestamp of each of ``witnesses`` (verifier keys) that validly
    cosigned ``note``."""
    from client.protocol.cosignature import check_cosignature
    from client.protocol.errors import VerificationError

    found = {}
    for witness in witnesses:
        try:
            found[witness.name] = check_cosignature(note, witness)
        except VerificationError:
            continue
    return found
