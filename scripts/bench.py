"""Benchmarks (not tests): each subcommand builds what it needs under .bench/,
starts the production server setup (gunicorn) on a free local port, measures,
and prints figures to paste into docs/benchmarks.md.

    scripts/bench chain -n 1000000      download + verify the whole chain over HTTP
    scripts/bench create -n 5000        CreateUID throughput, 8 concurrent clients
    scripts/bench fetch -n 10000        FetchKeyInit throughput, 8 concurrent clients
    scripts/bench issue -n 30           token issuance, 100-token voucher requests
    scripts/bench client -n 1000000     keyclient sync and lookup, as processes
    scripts/bench lookup -n 100000      lookup after an incremental sync (--code: A/B)
    scripts/bench refused [--code DIR]  server CPU of the costliest refused requests
    scripts/bench keydoc                key document and cached notary query, wrk -c16
    scripts/bench append --code DIR     CreateUID throughput, paired against another checkout
    scripts/bench proofs -n 1000000     proof latency on a tree of N entries, in-process
    scripts/bench light -n 1000000      lookup --light in the library against an N-entry log
    scripts/bench slow                  probe answered within 1 s under 200 slow connections
    scripts/bench crash --rounds 24     kill -9 during sustained writes: acknowledged writes lost
    scripts/bench lock --hold 40        slowest answer while the write lock is held 40 s
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import requests

from ports import free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
BIN = Path(sys.executable).parent


def chain_instance(n: int) -> Path:
    """An instance whose chain has ``n`` entries, built once and kept in .bench/."""
    path = BENCH / f"chain-{n}"
    if not (path / "config.py").exists():
        click.echo(f"building a {n}-entry chain in {path} (once; kept for later runs)")
        subprocess.run([BIN / "keyserver", "init", "--instance", path, "--server-name",
                        "bench.example", "--url", "http://127.0.0.1"], check=True)
        if n > 1:
            started = time.perf_counter()
            subprocess.run([BIN / "keyserver", "chain", "load", "--instance", path,
                            "-n", str(n - 1)], check=True)
            click.echo(f"built in {time.perf_counter() - started:.0f} s")
    return path


def code_env(code: Path | None) -> dict[str, str]:
    """The environment that makes this venv's commands run the keyserver of checkout
    ``code`` (None: this one): it comes first on ``PYTHONPATH``, before the editable
    install of this checkout. Run such commands from outside both checkouts, since
    the current directory comes first of all (gunicorn puts it on ``sys.path``)."""
    return {**os.environ, **({"PYTHONPATH": str(code)} if code else {})}


@contextlib.contextmanager
def fresh_instance(prefix: str, code: Path | None = None) -> Iterator[Path]:
    """A new instance (``keyserver init`` of checkout ``code``) under .bench/ for one
    run, removed after it."""
    BENCH.mkdir(exist_ok=True)
    instance = Path(tempfile.mkdtemp(dir=BENCH, prefix=f"{prefix}-")) / "instance"
    try:
        subprocess.run([BIN / "keyserver", "init", "--instance", instance, "--server-name",
                        "bench.example", "--url", "http://127.0.0.1"], check=True,
                       capture_output=True, env=code_env(code), cwd=instance.parent)
        yield instance
    finally:
        shutil.rmtree(instance.parent)


@contextlib.contextmanager
def gunicorn(instance: Path, workers: int, threads: int = 1,
             config: dict[str, str] | None = None, code: Path | None = None,
             options: list[str] | None = None, app: str = "keyserver:create_app()"):
    """Serve ``instance``; ``config`` adds ``KEYSERVER_*`` environment variables;
    ``code`` serves another checkout's keyserver (see ``code_env``); ``options`` are
    more gunicorn options; ``app`` another app (``scripts/bench_app.py``'s)."""
    port = free_port()
    with serving(instance, port, config, code,
                 [BIN / "gunicorn", "-w", str(workers), "--threads", str(threads), "-b",
                  f"127.0.0.1:{port}", "--log-level", "warning", "--no-control-socket",
                  *(options or []), app]) as served:
        yield served


@contextlib.contextmanager
def granian(instance: Path, workers: int, threads: int,
            config: dict[str, str] | None = None, code: Path | None = None,
            options: list[str] | None = None, factory: str = "keyserver:create_app"):
    """Serve ``instance`` with granian's WSGI interface (``deploy/keyserver.service``'s
    server): ``workers`` processes of ``threads`` blocking threads each; ``code`` as
    for ``gunicorn``; ``factory`` names the app factory (``scripts/bench_app.py``'s,
    with ``--working-dir``)."""
    port = free_port()
    with serving(instance, port, config, code,
                 [BIN / "granian", "--interface", "wsgi", "--workers", str(workers),
                  "--blocking-threads", str(threads), "--host", "127.0.0.1", "--port",
                  str(port), "--log-level", "warning", "--no-ws", *(options or []),
                  "--factory", factory]) as served:
        yield served


@contextlib.contextmanager
def serving(instance: Path, port: int, config: dict[str, str] | None, code: Path | None,
            command: list) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run a server ``command`` listening on ``port`` for ``instance``, from the
    instance's parent folder (outside every checkout); its URL and process, once it
    answers."""
    env = {**code_env(code), "KEYSERVER_INSTANCE": str(instance), **(config or {})}
    process = subprocess.Popen(command, env=env, cwd=instance.parent)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            # A worker still booting on a busy machine accepts the connection but
            # answers after the timeout: wait for it too.
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                requests.get(url + "/v1/hashchain/head", timeout=1)
                break
            time.sleep(0.05)
        yield url, process
    finally:
        process.terminate()
        process.wait()


def worker_pids(master: int) -> list[str]:
    """A server's worker processes (the children of gunicorn's or granian's master)."""
    return Path(f"/proc/{master}/task/{master}/children").read_text().split()


def worker_memory_kib(master: int) -> dict[str, int]:
    """Current and peak resident memory summed over gunicorn's workers."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for pid in worker_pids(master):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in total:
                total[name] += int(value.split()[0])
    return total


def worker_cpu_seconds(master: int) -> float:
    """User and system CPU time summed over gunicorn's workers. Per request, it tells
    a slow period of this VM (the same code costs up to 1.7x more CPU) from a slow
    change."""
    ticks = 0
    for pid in worker_pids(master):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])     # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@click.group()
def main() -> None:
    """Benchmarks of the keyserver and its client."""


@main.command()
@click.option("-n", "entries", default=1_000_000, show_default=True, help="Chain length.")
@click.option("--chunk", default=10_000, show_default=True, help="Entries per request.")
@click.option("--json", "use_json", is_flag=True, help="JSON instead of msgpack.")
@click.option("--runs", default=3, show_default=True)
@click.option("--workers", default=2, show_default=True, help="gunicorn workers.")
def chain(entries: int, chunk: int, use_json: bool, runs: int, workers: int) -> None:
    """Time a full download + verification of an N-entry chain over HTTP."""
    from client.session import download_chain
    from client.transport.api import KeyserverAPI
    from client.trust.chainstate import ChainState

    instance = chain_instance(entries)
    with gunicorn(instance, workers) as (url, process):
        times = []
        for _ in range(runs):
            api = KeyserverAPI(url)
            state = ChainState()
            started = time.perf_counter()
            for _ in download_chain(api, state, chunk_size=chunk, use_msgpack=not use_json):
                pass
            times.append(time.perf_counter() - started)
            assert state.length == entries, state.length
        memory = worker_memory_kib(process.pid)
    encoding = "json" if use_json else "msgpack"
    click.echo(f"chain download+verify: N={entries} chunk={chunk} {encoding} "
               f"gunicorn -w {workers}: best {min(times):.2f} s, median "
               f"{statistics.median(times):.2f} s over {runs} runs "
               f"({entries / min(times):,.0f} entries/s); server workers RSS "
               f"{memory['VmRSS'] / 1024:.0f} MiB, peak {memory['VmHWM'] / 1024:.0f} MiB")


def _registration(args: tuple[int, bytes, int]) -> dict:
    """One client's signed create message (with escrow, as keyclient register sends)."""
    import nacl.signing

    from client.protocol.keys import ed25519_entry
    from client.protocol.uidmessage import build_uid_content, sign_uid_content
    from keyserver.loadgen import synthetic_identity

    number, lastentry, now = args
    sigkey, escrow = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    content = build_uid_content(
        synthetic_identity("bench", number, "bench.example"), ed25519_entry(sigkey),
        msgcount=0, not_before_ts=now, not_after_ts=now + 30 * 24 * 3600 * 1000,
        lastentry=lastentry, sigescrow=ed25519_entry(escrow))
    return sign_uid_content(content, sigkey, escrow_key=escrow)


def hammer(url: str, requests_: list[tuple[str, str, bytes | None, dict[str, str]]],
           clients: int) -> tuple[float, dict]:
    """Send (method, path, body, headers) requests from ``clients`` threads; return the
    wall time and a count of answers by status."""
    pending = iter(requests_)
    lock = threading.Lock()
    statuses: dict[int, int] = {}

    from client.transport.http11 import Connection
    from client.protocol.urls import split_url

    scheme, host, port, _ = split_url(url)

    def client() -> None:
        # The client library's HTTP connection, not requests or http.client: the load
        # generator shares the machine's two cores with the server, and those cost
        # several times more CPU per call.
        connection = Connection(scheme, host, port, timeout=60, deadline=60)
        while True:
            with lock:
                item = next(pending, None)
            if item is None:
                connection.close()
                return
            method, path, body, headers = item
            status, _, _ = connection.request(
                method, path, {"Content-Type": "application/json", **headers}, body,
                1 << 20, 1 << 20)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, statuses


@main.command()
@click.option("-n", "count", default=6000, show_default=True, help="Registrations per run.")
@click.option("--clients", default=8, show_default=True, help="Concurrent clients.")
@click.option("--workers", default=2, show_default=True, help="gunicorn workers.")
@click.option("--threads", default=1, show_default=True, help="Threads per gunicorn worker.")
@click.option("--runs", default=3, show_default=True)
def create(count: int, clients: int, workers: int, threads: int, runs: int) -> None:
    """CreateUID throughput over HTTP against gunicorn, durable commits, each
    registration paid with a token (each run on a fresh instance; messages are
    signed and tokens minted before the clock starts)."""
    synchronous = os.environ.get("KEYSERVER_SQLITE_SYNCHRONOUS", "FULL")
    repeat(f"CreateUID: {clients} clients, gunicorn -w {workers} --threads {threads}, "
           f"SQLite synchronous={synchronous}", "registrations", count, runs,
           lambda: _create_run(count, clients, workers, threads))


def repeat(title: str, unit: str, count: int, runs: int, run) -> None:
    """Call ``run()`` (-> elapsed seconds, details) ``runs`` times; print each rate
    and the median."""
    rates = []
    for _ in range(runs):
        elapsed, details = run()
        rates.append(count / elapsed)
        click.echo(f"  {count} {unit} in {elapsed:.2f} s = {rates[-1]:,.0f}/s; {details}")
    click.echo(f"{title}: median {statistics.median(rates):,.0f} {unit}/s "
               f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")


def _create_run(count: int, clients: int, workers: int, threads: int,
                code: Path | None = None) -> tuple[float, str]:
    import json
    import multiprocessing

    from client.protocol.encoding import b64decode

    from client.clock import now_ms

    with fresh_instance("create", code) as instance:
        with gunicorn(instance, workers, threads, code=code) as (url, server):
            head = b64decode(requests.get(url + "/v1/hashchain/head").json()["entry"])[:32]
            now = now_ms()
            with multiprocessing.get_context("fork").Pool() as pool:
                messages = pool.map(_registration, [(i, head, now) for i in range(count)],
                                    chunksize=250)
            tokens = subprocess.run(
                [BIN / "keyserver", "tokens", "mint", "-n", str(count), "--instance", instance],
                check=True, capture_output=True, text=True, env=code_env(code),
                cwd=instance.parent).stdout.split()
            work = [("PUT", f"/v1/users/{m['content']['identity']}",
                     json.dumps({"uid_message": m}).encode(),
                     {"Authorization": f'PrivateToken token="{token}"'})
                    for m, token in zip(messages, tokens)]
            cpu = worker_cpu_seconds(server.pid)
            elapsed, statuses = hammer(url, work, clients)
            cpu = worker_cpu_seconds(server.pid) - cpu
        verified = subprocess.run([BIN / "keyserver", "chain", "verify", "--instance", instance],
                                  capture_output=True, text=True, env=code_env(code),
                                  cwd=instance.parent).stdout.strip()
    return elapsed, (f"server CPU {cpu / count * 1000:.2f} ms per registration; "
                     f"answers {statuses}; {verified}")


@main.command()
@click.option("-n", "count", default=10_000, show_default=True,
              help="Fetches per run (as many non-fallback KeyInits are stored first).")
@click.option("--clients", default=8, show_default=True, help="Concurrent clients.")
@click.option("--workers", default=2, show_default=True, help="gunicorn workers.")
@click.option("--threads", default=1, show_default=True, help="Threads per gunicorn worker.")
@click.option("--runs", default=3, show_default=True)
def fetch(count: int, clients: int, workers: int, threads: int, runs: int) -> None:
    """FetchKeyInit throughput over HTTP against gunicorn: every fetch consumes (deletes)
    a non-fallback KeyInit of one identity in a durable commit (each run on a fresh
    instance, the KeyInits added before the clock starts)."""
    repeat(f"FetchKeyInit: {clients} clients, gunicorn -w {workers} --threads {threads}",
           "fetches", count, runs, lambda: _fetch_run(count, clients, workers, threads))


def _fetch_run(count: int, clients: int, workers: int, threads: int) -> tuple[float, str]:
    import sqlite3

    import nacl.public
    import nacl.signing

    from client.protocol.encoding import b64decode, b64url_encode

    from client.clock import now_ms
    from client.protocol.keyinit import build_keyinit, build_session_anchor, sigkeyhash
    from client.protocol.keys import X25519, KeyEntry, ed25519_entry
    from client.protocol.uidmessage import build_uid_content, sign_uid_content

    repouri = "http://127.0.0.1"
    with fresh_instance("fetch") as instance:
        batches = [list(range(start, min(start + 50, count + 1)))
                   for start in range(1, count + 1, 50)]
        tokens = [f'PrivateToken token="{token}"' for token in subprocess.run(
            [BIN / "keyserver", "tokens", "mint", "-n", str(len(batches) + 2),
             "--instance", instance], check=True, capture_output=True, text=True).stdout.split()]
        # One client address and one sigkeyhash: the fetch rate limits would stop it.
        config = {"KEYSERVER_MAX_KEYINITS_PER_IDENTITY": str(count + 1),
                  "KEYSERVER_KEYINIT_FETCH_RATE_PER_ADDRESS": "0",
                  "KEYSERVER_KEYINIT_FETCH_RATE_PER_SIGKEYHASH": "0"}
        with gunicorn(instance, workers, threads, config) as (url, _):
            sigkey = nacl.signing.SigningKey.generate()
            now = now_ms()
            head = b64decode(requests.get(url + "/v1/hashchain/head").json()["entry"])[:32]
            content = build_uid_content("alice@bench.example", ed25519_entry(sigkey),
                                        msgcount=0, not_before_ts=now,
                                        not_after_ts=now + 30 * 24 * 3600 * 1000, lastentry=head)
            requests.put(url + "/v1/users/alice@bench.example",
                         json={"uid_message": sign_uid_content(content, sigkey)},
                         headers={"Authorization": tokens.pop()}).raise_for_status()
            pfkey = KeyEntry(X25519, bytes(nacl.public.PrivateKey.generate().public_key))
            anchor = build_session_anchor([pfkey])

            def keyinit(msgcount: int, fallback: bool) -> dict:
                return build_keyinit(sigkey, msgcount=msgcount, not_before_ts=now,
                                     not_after_ts=now + 24 * 3600 * 1000, fallback=fallback,
                                     repouri=repouri, anchor=anchor)

            sigkey_json = ed25519_entry(sigkey).to_json()
            for batch in batches + [[count + 1]]:
                items = [keyinit(n, n == count + 1) for n in batch]
                requests.post(url + "/v1/keyinits",
                              json={"sigkey": sigkey_json, "keyinits": items},
                              headers={"Authorization": tokens.pop()}).raise_for_status()
            path = f"/v1/keyinits/{b64url_encode(sigkeyhash(bytes(sigkey.verify_key)))}/fetch"
            elapsed, statuses = hammer(url, [("POST", path, None, {})] * count, clients)
        with contextlib.closing(sqlite3.connect(instance / "keyserver.sqlite")) as conn:
            left = {("fallback" if fallback else "non-fallback"): n for fallback, n in conn.execute(
                "SELECT fallback, count(*) FROM keyinits GROUP BY fallback")}
    return elapsed, f"answers {statuses}; KeyInits left {left}"


@main.command()
@click.option("-n", "count", default=30, show_default=True, help="Voucher requests per run.")
@click.option("--tokens", "per_request", default=100, show_default=True,
              help="Blinded messages per request (the server's MAX_TOKENS_PER_ISSUE).")
@click.option("--clients", default=4, show_default=True, help="Concurrent clients.")
@click.option("--workers", default=2, show_default=True, help="gunicorn workers.")
@click.option("--runs", default=3, show_default=True)
def issue(count: int, per_request: int, clients: int, workers: int, runs: int) -> None:
    """Token issuance over HTTP against gunicorn: N voucher requests of 100 blinded
    messages each, every one blind-signed and its voucher charged in a durable commit
    (each run on a fresh instance; vouchers made and messages blinded before the clock
    starts, one extra request's tokens finalized and verified first)."""
    repeat(f"Token issuance: {per_request} tokens a request, {clients} clients, "
           f"gunicorn -w {workers}", "tokens", count * per_request, runs,
           lambda: _issue_run(count, per_request, clients, workers))


def _issue_run(count: int, per_request: int, clients: int,
               workers: int) -> tuple[float, str]:
    import json

    from client.protocol.encoding import b64decode, b64encode
    from client.protocol.tokens import (finalize_tokens, parse_spki, prepare_blinded_tokens,
                                        token_challenge)

    with fresh_instance("issue") as instance:
        codes = [line for line in subprocess.run(
            [BIN / "keyserver", "vouchers", "create", "--tokens", str(per_request),
             "--count", str(count + 1), "--instance", instance],
            check=True, capture_output=True, text=True).stdout.split() if line.count("-") == 7]
        with gunicorn(instance, workers) as (url, server):
            [key] = requests.get(url + "/v1/capabilities").json()["token_keys"]
            public = parse_spki(b64decode(key["spki"]))
            challenge = token_challenge("bench.example")

            def request(code: str) -> tuple[list, bytes]:
                pending = prepare_blinded_tokens(public, challenge, per_request)
                body = {"voucher": code, "token_key_id": key["key_id"],
                        "blinded": [b64encode(item.blinded) for item in pending]}
                return pending, json.dumps(body).encode()

            pending, body = request(codes.pop())
            answer = requests.post(url + "/v1/tokens/issue", data=body,
                                   headers={"Content-Type": "application/json"})
            answer.raise_for_status()
            finalize_tokens(public, pending, [b64decode(s) for s in answer.json()["blind_sigs"]])
            work = [("POST", "/v1/tokens/issue", request(code)[1], {}) for code in codes]
            cpu = worker_cpu_seconds(server.pid)
            elapsed, statuses = hammer(url, work, clients)
            cpu = worker_cpu_seconds(server.pid) - cpu
        with contextlib.closing(sqlite3.connect(instance / "keyserver.sqlite")) as conn:
            [(left,)] = conn.execute("SELECT sum(remaining) FROM vouchers")
    return elapsed, (f"server CPU {cpu / (count * per_request) * 1000:.2f} ms per token; "
                     f"answers {statuses}; tokens left on the vouchers {left}")
@main.command()
@click.option("-n", "count", default=200, show_default=True, help="Requests of each kind.")
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Checkout whose keyserver is measured (default: this one), e.g. an "
                   "older one; served with this venv from outside both checkouts.")
def refused(count: int, code: Path | None) -> None:
    """Server CPU per refused request: the costliest requests without a valid token
    that fit the server's limits, against a small valid-shape PUT without a token
    (gunicorn -w 1, one client, requests in sequence; CPU from /proc)."""
    BENCH.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=BENCH, prefix="refused-"))
    instance, url = folder / "instance", "http://127.0.0.1"
    try:
        subprocess.run([BIN / "keyserver", "init", "--instance", instance, "--server-name",
                        "bench.example", "--url", url], check=True, capture_output=True,
                       env=code_env(code), cwd=folder)
        [token] = subprocess.run(
            [BIN / "keyserver", "tokens", "mint", "-n", "1", "--instance", instance],
            check=True, capture_output=True, text=True, env=code_env(code),
            cwd=folder).stdout.split()
        with gunicorn(instance, 1, code=code) as (server_url, server):
            kinds = _refused_kinds(server_url, url, token)
            hammer(server_url, [kinds["small PUT (normal)"]] * 20, 1)    # warm the worker
            costs = {}
            for kind, request in kinds.items():
                cpu = worker_cpu_seconds(server.pid)
                _, statuses = hammer(server_url, [request] * count, 1)
                costs[kind] = (worker_cpu_seconds(server.pid) - cpu) / count
                click.echo(f"  {kind}: {len(request[2]):,} bytes, answers {statuses}, "
                           f"{costs[kind] * 1000:.2f} ms CPU each")
    finally:
        shutil.rmtree(folder)
    normal = costs["small PUT (normal)"]
    worst = max(costs, key=costs.__getitem__)
    click.echo(f"refused requests, {code or ROOT}: normal {normal * 1000:.2f} ms CPU, worst "
               f"{worst} {costs[worst] * 1000:.2f} ms = {costs[worst] / normal:.1f}x")


Request = tuple[str, str, bytes, dict[str, str]]


def _refused_kinds(server_url: str, repouri: str, token: str) -> dict[str, Request]:
    """The normal refused request and the costliest ones we could build, all without
    a token (or, for the issue, a voucher): each has a valid shape up to the token
    step, or fills the global body limit. alice@bench.example is registered with
    ``token`` so that her KeyInit batches reach the token step."""
    import json

    import nacl.signing

    from client.clock import now_ms
    from client.protocol.encoding import b64decode, b64encode
    from client.protocol.keyinit import build_keyinit, build_session_anchor
    from client.protocol.keys import X25519, KeyEntry, ed25519_entry
    from client.protocol.uidmessage import build_uid_content, sign_uid_content

    capabilities = requests.get(server_url + "/v1/capabilities").json()
    limit = capabilities["limits"]["max_request_bytes"]
    lastentry = b64decode(requests.get(server_url + "/v1/hashchain/head").json()["entry"])[:32]
    now = now_ms()
    pfkey = KeyEntry(X25519, bytes(range(1, 33)))      # a valid X25519 key, used many times

    def compact(obj: dict) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def put(identity: str, *, pubkeys: int = 0, nymaddress: bytes = b"",
            sigkey: nacl.signing.SigningKey | None = None) -> Request:
        sigkey = sigkey or nacl.signing.SigningKey.generate()
        escrow = nacl.signing.SigningKey.generate()
        content = build_uid_content(
            identity, ed25519_entry(sigkey), msgcount=0, not_before_ts=now,
            not_after_ts=now + 30 * 24 * 3600 * 1000, lastentry=lastentry,
            sigescrow=ed25519_entry(escrow), pubkeys=[pfkey] * pubkeys,
            forwardsec="optional" if nymaddress else "strict", nymaddress=nymaddress)
        message = sign_uid_content(content, sigkey, escrow_key=escrow)
        return "PUT", f"/v1/users/{identity}", compact({"uid_message": message}), {}

    alice = nacl.signing.SigningKey.generate()
    _, path, body, _ = put("alice@bench.example", sigkey=alice)
    requests.put(server_url + path, data=body, headers={
        "Authorization": f'PrivateToken token="{token}"'}).raise_for_status()

    def add(items: int, padding: int = 0) -> Request:
        anchor = build_session_anchor([pfkey], nymaddress="n" * padding)
        keyinits = [build_keyinit(alice, msgcount=n, not_before_ts=now,
                                  not_after_ts=now + 24 * 3600 * 1000, fallback=False,
                                  repouri=repouri, anchor=anchor)
                    for n in range(1, items + 1)]
        return "POST", "/v1/keyinits", compact(
            {"sigkey": ed25519_entry(alice).to_json(), "keyinits": keyinits}), {}

    def filling(size: int, make) -> Request:
        """``make(n)`` for the largest ``n`` whose body fits ``size`` (bodies grow about
        linearly in ``n``, a little faster as msgcounts gain digits)."""
        one, two = len(make(1)[2]), len(make(2)[2])
        count = 1 + (size - one) // (two - one)
        while len((request := make(count))[2]) > size:
            count -= 1
        return request

    keyinit_bytes = len(add(2)[2]) - len(add(1)[2])
    issue = compact({"voucher": "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA",
                     "token_key_id": capabilities["token_keys"][0]["key_id"],
                     "blinded": [b64encode(bytes(1) + os.urandom(255)) for _ in range(100)]})
    return {
        "small PUT (normal)": put("normal@bench.example"),
        "PUT of the global limit, all pubkeys": filling(
            limit, lambda n: put("keys@bench.example", pubkeys=n)),
        "PUT of 16 KiB, 8 pubkeys": filling(
            16 * 1024, lambda n: put("big@bench.example", pubkeys=8, nymaddress=bytes(3 * n))),
        "add of 50 KeyInits of 2 KB": add(50, (2000 - keyinit_bytes) * 3 // 4),
        "add of the global limit, all KeyInits": filling(limit, add),
        "issue of 100 blinded, unknown voucher": ("POST", "/v1/tokens/issue", issue, {}),
    }


#: The keydoc scenario's endpoints, by what they are called in the report.
KEYDOC_PATHS = {"trivial Flask route (ceiling)": "/_bench/trivial",
                "key document": "/_matrix/key/v2/server",
                "cached notary query": "/_matrix/key/v2/query/origin.example"}
#: The setups ``keydoc`` compares unless told: deploy/'s (granian) and the gunicorn
#: setup measured best before it (docs/benchmarks.md).
KEYDOC_SERVERS = ("granian:2x4", "gunicorn:3x2")


@main.command()
@click.option("--duration", default=10, show_default=True, help="Seconds of each wrk run.")
@click.option("--connections", default=16, show_default=True,
              help="Concurrent keep-alive connections (wrk -c).")
@click.option("--runs", default=5, show_default=True, help="Runs of each endpoint.")
@click.option("--server", "specs", multiple=True, default=KEYDOC_SERVERS,
              show_default=True, help="A server setup, NAME:WORKERSxTHREADS with NAME "
              "granian or gunicorn (gthread, keep-alive 5 s); several are compared in "
              "paired runs, all serving at once and taking turns.")
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another checkout (a worktree of an earlier commit): each setup also "
              "serves its keyserver, in the same paired runs.")
def keydoc(duration: int, connections: int, runs: int, specs: tuple[str, ...],
           code: Path | None) -> None:
    """Requests per second and p99 latency of GET /_matrix/key/v2/server and of a cached
    notary query (GET /_matrix/key/v2/query/<name>, a real Matrix-shaped document in
    the answer), against a trivial Flask route of the same app in the same server as
    the ceiling: wrk with N keep-alive connections, each server on 127.0.0.1. The
    endpoints and servers take turns, one wrk run each, so a slow period of the VM hits
    all; the load average is printed with every run."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise click.ClickException("wrk is not installed: apt-get install -y wrk "
                                   "(Debian/Ubuntu), or see https://github.com/wg/wrk")
    setups = {spec: (*_server_setup(spec), None) for spec in specs}
    if code is not None:
        setups.update({f"{spec} ({code.name})": (*_server_setup(spec), code.resolve())
                       for spec in specs})
    servers = tuple(setups)
    with fresh_instance("keydoc") as instance, _matrix_origin() as origin_url, \
            contextlib.ExitStack() as stack:
        config = {"KEYSERVER_NOTARY_ORIGINS": f'{{"origin.example": "{origin_url}"}}'}
        urls = {}
        for spec, (name, workers, threads, checkout) in setups.items():
            if name == "gunicorn":
                urls[spec] = stack.enter_context(gunicorn(
                    instance, workers, threads, config, checkout,
                    app="bench_app:create_app()",
                    options=["--worker-class", "gthread", "--keep-alive", "5",
                             "--chdir", str(ROOT / "scripts")]))
            else:
                urls[spec] = stack.enter_context(granian(
                    instance, workers, threads, config, checkout,
                    factory="bench_app:create_app",
                    options=["--working-dir", str(ROOT / "scripts")]))
        for url, _ in urls.values():
            answer = requests.get(url + KEYDOC_PATHS["cached notary query"], timeout=10).json()
            if len(answer["server_keys"]) != 1:
                raise click.ClickException(f"the notary served no document: {answer}")
            for path in KEYDOC_PATHS.values():                      # warm every worker
                _wrk(wrk, url + path, 1, connections)
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for run in range(runs):
            for what, path in KEYDOC_PATHS.items():
                for spec in servers if run % 2 == 0 else servers[::-1]:
                    url, server = urls[spec]
                    cpu = worker_cpu_seconds(server.pid)
                    rate, p99, count = _wrk(wrk, url + path, duration, connections)
                    cpu = (worker_cpu_seconds(server.pid) - cpu) / count
                    results.setdefault((spec, what), []).append((rate, p99, cpu))
                    click.echo(f"  run {run + 1}, {spec}, {what}: {rate:,.0f} req/s, p99 "
                               f"{p99:.2f} ms, server CPU {cpu * 1e6:.0f} µs/request; load "
                               f"{os.getloadavg()[0]:.2f}")
    click.echo(f"keydoc: wrk -t2 -c{connections} -d{duration}s, medians of {runs} runs:")
    for spec in servers:
        ceiling = results[spec, "trivial Flask route (ceiling)"]
        for what in KEYDOC_PATHS:
            figures = results[spec, what]
            shares = [r / c for (r, _, _), (c, _, _) in zip(figures, ceiling)]
            click.echo(f"  {spec}, {what}: {statistics.median(r for r, _, _ in figures):,.0f}"
                       f" req/s ({statistics.median(shares):.0%} of the ceiling), p99 "
                       f"{statistics.median(p for _, p, _ in figures):.2f} ms, server CPU "
                       f"{statistics.median(c for _, _, c in figures) * 1e6:.0f} µs/request "
                       f"(runs: {', '.join(f'{r:,.0f}' for r, _, _ in figures)})")
    for spec in servers[1:]:
        for what in KEYDOC_PATHS:
            ratios = [a / b for (a, _, _), (b, _, _)
                      in zip(results[servers[0], what], results[spec, what])]
            click.echo(f"  {servers[0]} / {spec}, {what}: median of the paired runs "
                       f"{statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})")


def _server_setup(spec: str) -> tuple[str, int, int]:
    """``NAME:WORKERSxTHREADS`` as (name, workers, threads)."""
    name, _, size = spec.partition(":")
    workers, _, threads = size.partition("x")
    if name not in ("granian", "gunicorn") or not workers.isdigit() or not threads.isdigit():
        raise click.BadParameter(f"{spec!r}: expected granian:WxT or gunicorn:WxT",
                                 param_hint="--server")
    return name, int(workers), int(threads)


def _wrk(wrk: str, url: str, duration: int, connections: int) -> tuple[float, float, int]:
    """One wrk run: requests per second, p99 latency in ms, requests answered; any
    answer but 200 fails the benchmark."""
    done = subprocess.run([wrk, "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
                          check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in done or "Socket errors" in done:
        raise click.ClickException(f"wrk saw failures on {url}:\n{done}")
    rate = float(done.split("Requests/sec:")[1].split()[0])
    count = int(done.split(" requests in ")[0].split()[-1])
    p99 = _wrk_ms(done.split(" 99%")[1].split()[0])
    return rate, p99, count


def _wrk_ms(text: str) -> float:
    """A wrk latency ("812.00us", "1.23ms", "2.01s") in milliseconds."""
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * factor
    raise ValueError(f"not a wrk latency: {text!r}")


@contextlib.contextmanager
def _matrix_origin() -> Iterator[str]:
    """A Matrix homeserver's key document (made with ``signedjson``, in Synapse's
    shape, valid for a week) served on 127.0.0.1 from a thread; its base URL."""
    import http.server
    import json

    import signedjson.key
    import signedjson.sign

    from client.clock import now_ms

    key = signedjson.key.generate_signing_key("a_bnch")
    old = signedjson.key.generate_signing_key("a_old")
    document = signedjson.sign.sign_json({
        "server_name": "origin.example",
        "verify_keys": {"ed25519:a_bnch": {
            "key": signedjson.key.encode_verify_key_base64(signedjson.key.get_verify_key(key))}},
        "old_verify_keys": {"ed25519:a_old": {
            "key": signedjson.key.encode_verify_key_base64(signedjson.key.get_verify_key(old)),
            "expired_ts": now_ms() - 3600 * 1000}},
        "valid_until_ts": now_ms() + 7 * 24 * 3600 * 1000}, "origin.example", key)
    body = json.dumps(document).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@main.command()
@click.option("-n", "entries", default=1_000_000, show_default=True, help="Chain length.")
@click.option("--new", "new_entries", default=1000, show_default=True,
              help="Entries for the incremental sync.")
@click.option("--runs", default=3, show_default=True)
def client(entries: int, new_entries: int, runs: int) -> None:
    """The keyclient CLI as a user runs it (a process per command, wall time):
    sync an N-entry chain into an empty home, look up an identity near the end of
    the chain never searched before, then sync the last NEW entries incrementally
    and look the identity up again."""
    instance = chain_instance(entries)
    with sqlite3.connect(instance / "keyserver.sqlite") as conn:
        [(identity,)] = conn.execute(
            "SELECT identity FROM identities ORDER BY pos DESC LIMIT 1")
    results: dict[str, list[float]] = {}
    with gunicorn(instance, 2) as (url, _):
        from client.session import download_chain
        from client.transport.api import KeyserverAPI
        from client.trust.chainstate import ChainState

        for _ in download_chain(KeyserverAPI(url), ChainState()):
            pass   # warm the server's page cache: this measures the client, not the disk
        for _ in range(runs):
            for run in (_client_run, _library_run):
                for what, seconds in run(url, identity, new_entries).items():
                    results.setdefault(what, []).append(seconds)
    click.echo(f"keyclient over N={entries} (gunicorn -w 2), looking up {identity}:")
    for what, times in results.items():
        click.echo(f"  {what}: runs {', '.join(f'{t:.3f}' for t in times)} s, "
                   f"median {statistics.median(times):.3f} s")


def _forget_newest(home: Path, new_entries: int) -> None:
    """The server's chain does not grow here: forget the newest entries locally
    instead, which costs the client exactly what new ones would."""
    from client.protocol.hashchain import ENTRY_SIZE, HASH_SIZE, K1_SIZE

    with sqlite3.connect(home / "state.sqlite") as state:
        length, = state.execute("SELECT length FROM chains").fetchone()
        keep = length - new_entries
        with open(home / "chains" / "bench.example" / "entries.bin", "rb") as handle:
            handle.seek((keep - 1) * ENTRY_SIZE)
            last_hash = handle.read(HASH_SIZE)
        state.execute("UPDATE chains SET length = ?, last_hash = ?", (keep, last_hash))
        state.execute("UPDATE scanned SET upto = min(upto, ?)", (keep,))
        state.execute("DELETE FROM found WHERE pos >= ?", (keep,))
    with open(home / "chains" / "bench.example" / "k1.bin", "ab") as handle:
        handle.truncate(keep * K1_SIZE)


def _library_run(url: str, identity: str, new_entries: int) -> dict[str, float]:
    """The same steps through the library in one process, as an application that
    embeds it runs them (no interpreter start, no imports per step)."""
    from client.session import ServerSession, add_server
    from client.store.home import Home

    path = Path(tempfile.mkdtemp(dir=BENCH, prefix="library-"))
    timings = {}

    def timed(what: str, step) -> None:
        started = time.perf_counter()
        step()
        timings[what] = time.perf_counter() - started

    try:
        home = Home(str(path))
        add_server(home, url)
        session = ServerSession(home, "bench.example", url)
        timed("library: sync from empty", session.sync)
        timed("library: lookup, identity not yet seen", lambda: session.lookup(identity))
        home.db.close()
        _forget_newest(path, new_entries)
        home = Home(str(path))
        session = ServerSession(home, "bench.example", url)
        timed(f"library: incremental sync of {new_entries} entries", session.sync)
        timed("library: lookup of that identity after it", lambda: session.lookup(identity))
        return timings
    finally:
        shutil.rmtree(path)


def _client_run(url: str, identity: str, new_entries: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(dir=BENCH, prefix="client-"))
    keyclient = [str(BIN / "keyclient"), "--home", str(home)]
    # As on a user's machine: modules compiled once and their bytecode kept (this
    # sandbox sets PYTHONDONTWRITEBYTECODE, which would recompile at every start).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "client")],
                   check=True, env=env)

    def timed(*args: str) -> float:
        started = time.perf_counter()
        done = subprocess.run(keyclient + list(args), capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise click.ClickException(f"keyclient {' '.join(args)}: {done.stdout}{done.stderr}")
        return elapsed

    try:
        timings = {"keyclient --help (interpreter and imports)": timed("--help")}
        subprocess.run(keyclient + ["server", "add", url], check=True, capture_output=True)
        timings["sync from empty"] = timed("sync")
        timings["lookup, identity not yet seen (k1 computed)"] = timed("lookup", identity)
        _forget_newest(home, new_entries)
        timings[f"incremental sync of {new_entries} entries"] = timed("sync")
        timings["lookup of that identity after it"] = timed("lookup", identity)
        return timings
    finally:
        shutil.rmtree(home)


@main.command("lookup")
@click.option("-n", "entries", default=100_000, show_default=True, help="Chain length.")
@click.option("--new", "new_entries", default=1000, show_default=True,
              help="Entries for the incremental sync.")
@click.option("--runs", default=5, show_default=True)
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another checkout's client to compare with, run by run in alternation.")
@click.option("--profile", "profile_to", type=click.Path(path_type=Path),
              help="Write a cProfile of the last in-process lookup of this checkout here.")
def lookup_bench(entries: int, new_entries: int, runs: int, code: Path | None,
                 profile_to: Path | None) -> None:
    """Lookup of an identity whose replies are not cached, after an incremental sync:
    a home synced from empty (holding the bundles the sync fetched) that searched
    IDENTITY before it was registered, then the newest NEW entries arrive (IDENTITY's
    among them), and ``keyclient sync`` and ``keyclient lookup IDENTITY`` run as
    processes; the lookup also through the library, in a process of its own that
    syncs first and times only ``ServerSession.lookup``. With ``--code`` the other
    checkout's client runs each step too (first or second in turn), from a home it
    made itself: paired runs for an A/B comparison. Prints every run and the medians."""
    instance = chain_instance(entries)
    with sqlite3.connect(instance / "keyserver.sqlite") as conn:
        [(identity,)] = conn.execute(
            "SELECT identity FROM identities ORDER BY pos DESC LIMIT 1")
    versions = {"this": None, **({"other": code.resolve()} if code else {})}
    results: dict[tuple[str, str], list[float]] = {}
    BENCH.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=BENCH, prefix="lookup-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        with gunicorn(instance, 2) as (url, _):
            templates = {}
            for name, path in versions.items():
                subprocess.run([sys.executable, "-m", "compileall", "-q",
                                str((path or ROOT) / "client")], check=True, env=env)
                templates[name] = work / f"template-{name}"
                _in_code(path, "lookup-prepare", str(templates[name]), url, identity,
                         str(new_entries))
            for run in range(runs):
                order = list(versions) if run % 2 == 0 else list(versions)[::-1]
                for name in order:
                    for what, seconds in _lookup_run(
                            versions[name], templates[name], work / f"run-{name}", url,
                            identity, profile_to if name == "this" and run == runs - 1
                            else None).items():
                        results.setdefault((what, name), []).append(seconds)
    finally:
        shutil.rmtree(work)
    click.echo(f"lookup after an incremental sync of {new_entries} entries, N={entries}"
               f" (gunicorn -w 2), {identity}:")
    for (what, name), times in results.items():
        label = f"{what} [{name}{': ' + str(versions[name]) if versions[name] else ''}]"
        click.echo(f"  {label}: runs {', '.join(f'{t:.3f}' for t in times)} s, "
                   f"median {statistics.median(times):.3f} s")


def _in_code(code: Path | None, *args: str) -> str:
    """Run a hidden step of this script with checkout ``code``'s client (None: this
    one), from a directory outside both checkouts; return what it printed."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args],
                          env=code_env(code), cwd=BENCH, capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def _children_cpu() -> float:
    """User and system CPU time of the waited-for child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _lookup_run(code: Path | None, template: Path, home: Path, url: str, identity: str,
                profile_to: Path | None) -> dict[str, float]:
    env = {k: v for k, v in code_env(code).items() if k != "PYTHONDONTWRITEBYTECODE"}
    keyclient = [str(BIN / "keyclient"), "--home", str(home)]

    def timed(what: str, *args: str) -> None:
        cpu = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(keyclient + list(args), capture_output=True, text=True,
                              env=env, cwd=BENCH)
        timings[what] = time.perf_counter() - started
        timings[what + ", CPU"] = _children_cpu() - cpu
        if done.returncode != 0:
            raise click.ClickException(f"keyclient {' '.join(args)}: {done.stdout}{done.stderr}")

    timings: dict[str, float] = {}
    try:
        shutil.copytree(template, home)
        timed("keyclient sync (incremental)", "sync")
        timed("keyclient lookup", "lookup", identity)
        shutil.rmtree(home)
        shutil.copytree(template, home)
        what = "library: ServerSession.lookup after sync"
        timings[what], timings[what + ", CPU"] = map(float, _in_code(
            code, "lookup-library", str(home), url, identity, str(profile_to or "")).split())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return timings


@main.command("lookup-prepare", hidden=True)
@click.argument("home", type=click.Path(path_type=Path))
@click.argument("url")
@click.argument("identity")
@click.argument("new_entries", type=int)
def lookup_prepare(home: Path, url: str, identity: str, new_entries: int) -> None:
    """The home of ``lookup``: synced from empty, IDENTITY searched (and then not
    there: its entry, like every held reply past it, is among the NEW forgotten)."""
    from client.session import ServerSession, add_server
    from client.store.home import Home

    state = Home(str(home))
    add_server(state, url)
    ServerSession(state, "bench.example", url).sync()
    ServerSession(state, "bench.example", url).search.search(identity)
    state.db.close()
    _forget_newest(home, new_entries)
    with sqlite3.connect(home / "state.sqlite") as db:
        length, = db.execute("SELECT length FROM chains").fetchone()
        db.execute("DELETE FROM held_replies WHERE pos >= ?", (length,))
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'complete_bundles'").fetchone():
            db.execute("DELETE FROM complete_bundles WHERE bundle >= ?", (length // 256,))


@main.command("lookup-library", hidden=True)
@click.argument("home")
@click.argument("url")
@click.argument("identity")
@click.argument("profile_to", default="")
def lookup_library(home: str, url: str, identity: str, profile_to: str) -> None:
    """Sync HOME, then print the seconds ``ServerSession.lookup(IDENTITY)`` takes, wall
    and CPU (of every thread)."""
    from client.session import ServerSession
    from client.store.home import Home

    session = ServerSession(Home(home), "bench.example", url)
    session.sync()
    profiler = None
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu = time.perf_counter(), time.process_time()
    assert session.lookup(identity) is not None
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile_to)
    click.echo(f"{elapsed:.6f} {cpu:.6f}")

@main.command()
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="The checkout to compare with (e.g. a worktree of the "
              "commit before the Merkle tree), served with this venv from outside both.")
@click.option("-n", "count", default=2000, show_default=True, help="Registrations per run.")
@click.option("--pairs", default=6, show_default=True)
@click.option("--clients", default=8, show_default=True, help="Concurrent clients.")
@click.option("--workers", default=2, show_default=True, help="gunicorn workers.")
def append(code: Path, count: int, pairs: int, clients: int, workers: int) -> None:
    """Append throughput (CreateUID over HTTP, durable commits, each paid with a token)
    of this checkout against ``--code``, in pairs of runs alternating which goes first;
    prints each pair's ratio and the medians."""
    code = code.resolve()
    rates: dict[str, list[float]] = {"before": [], "after": []}
    for pair in range(pairs):
        order = [("before", code), ("after", None)]
        for name, checkout in order if pair % 2 == 0 else order[::-1]:
            elapsed, details = _create_run(count, clients, workers, 1, checkout)
            rates[name].append(count / elapsed)
            click.echo(f"  pair {pair + 1} {name}: {rates[name][-1]:,.0f}/s; {details}")
        click.echo(f"  pair {pair + 1}: after/before {rates['after'][-1] / rates['before'][-1]:.3f}")
    ratios = [a / b for a, b in zip(rates["after"], rates["before"])]
    click.echo(f"append (CreateUID) -n {count}, {clients} clients, gunicorn -w {workers}: "
               f"before ({code}) median {statistics.median(rates['before']):,.0f}/s, after "
               f"median {statistics.median(rates['after']):,.0f}/s; after/before: median "
               f"{statistics.median(ratios):.3f} (pairs: {', '.join(f'{r:.2f}' for r in ratios)})")


def tree_database(n: int):
    """A database with the server's schema whose chain and tree hold ``n`` synthetic
    entries (random bytes; the tree is computed in memory and its nodes inserted
    directly, rather than appending n signed UIDMessages), built once under .bench/."""
    from client.protocol.merkle import MemoryTree
    from keyserver.storage import db

    path = BENCH / f"tree-{n}.sqlite"
    if not path.exists():
        BENCH.mkdir(exist_ok=True)
        click.echo(f"building a {n}-entry tree in {path} (once; kept for later runs)")
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        database = db.connect(str(partial), "OFF")
        db.init_db(database)
        tree = MemoryTree()
        with db.transaction(database):
            for first in range(0, n, 100_000):
                rows = []
                for pos in range(first, min(n, first + 100_000)):
                    entry = os.urandom(32) + b"\x01" + os.urandom(120)
                    tree.append(entry)
                    rows.append((pos, entry, entry[:32], entry[33:41], pos))
                database.conn.executemany(
                    "INSERT INTO chain (pos, entry, hash, nonce, ts) VALUES (?, ?, ?, ?, ?)",
                    rows)
            for level, hashes in enumerate(tree.levels):
                database.conn.executemany(
                    "INSERT INTO tree_nodes (level, idx, hash) VALUES (?, ?, ?)",
                    ((level, index, h) for index, h in enumerate(hashes)))
        database.close()
        partial.rename(path)
        click.echo(f"built in {time.perf_counter() - started:.0f} s")
    return db.connect(str(path), "FULL", create=False)


@main.command()
@click.option("-n", "entries", default=1_000_000, show_default=True, help="Tree size.")
@click.option("--proofs", default=2000, show_default=True, help="Proofs of each kind.")
@click.option("--verify", "check_tree", is_flag=True,
              help="Also time chain verify's recomputation of the whole tree.")
def proofs(entries: int, proofs: int, check_tree: bool) -> None:
    """Latency of inclusion and consistency proofs on a tree of N entries, in-process,
    through the server's service functions and tree storage (the read path of
    /v1/hashchain/proof/*), for random leaves and sizes; and of hash tiles."""
    import random

    from client.protocol.tiles import Tile
    from keyserver.service import checkpoints, tiles
    from keyserver.storage import tree

    database = tree_database(entries)
    rng = random.Random(1)

    def timed(kind: str, call, arguments) -> None:
        # Wall time, and this thread's CPU time: on a loaded machine a call that the
        # scheduler preempts waits for a time slice, which the CPU time leaves out.
        walls, cpus = [], []
        for args in arguments:
            started, cpu = time.perf_counter(), time.thread_time()
            call(database, *args)
            walls.append(time.perf_counter() - started)
            cpus.append(time.thread_time() - cpu)

        def quantiles(times: list[float]) -> str:
            times.sort()
            p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
            return f"p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, max {times[-1] * 1000:.3f} ms"

        click.echo(f"  {kind}: {len(walls)} at N={entries:,}: wall {quantiles(walls)}; "
                   f"CPU {quantiles(cpus)}")

    for _ in range(2):    # the first round warms SQLite's page cache
        timed("inclusion, tree_size = N", checkpoints.inclusion_proof,
              [(rng.randrange(entries), entries) for _ in range(proofs)])
        sizes = [rng.randrange(1, entries + 1) for _ in range(proofs)]
        timed("inclusion, random tree_size", checkpoints.inclusion_proof,
              [(rng.randrange(size), size) for size in sizes])
        timed("consistency, random first to N", checkpoints.consistency_proof,
              [(rng.randrange(entries + 1), entries) for _ in range(proofs)])
        timed("consistency, random pair", checkpoints.consistency_proof,
              [sorted((rng.randrange(entries + 1), size)) for size in sizes])
        timed("hash tile 0/N (full)", tiles.read_tile,
              [(Tile(0, rng.randrange(entries // 256)), entries) for _ in range(proofs)])
        timed("entry bundle N (full)", tiles.read_tile,
              [(Tile(None, rng.randrange(entries // 256)), entries) for _ in range(proofs)])
    if check_tree:
        started = time.perf_counter()
        tree.verify_stored(database, entries)
        click.echo(f"  chain verify's tree check: {time.perf_counter() - started:.1f} s")


def light_instance(n: int) -> tuple[Path, str]:
    """An instance whose log holds ``n`` entries, all but two synthetic, and the
    identity of its newest entry, a real registration; built once under .bench/.
    ``keyserver init`` makes entry 0, then ``n - 2`` synthetic entries (random bytes,
    as ``tree_database``'s) go into ``chain`` directly and the tree of all of them,
    computed in memory, into ``tree_nodes``; ``keyserver chain load -n 1`` appends the
    real one through the normal append path (its tree nodes too) and ``keyserver
    worker --once`` signs a checkpoint of the whole log. Nothing in a light lookup
    reads the synthetic entries but their tree hashes."""
    from client.protocol.merkle import MemoryTree
    from keyserver.storage import db

    path = BENCH / f"light-{n}"
    instance = path / "instance"
    if not (path / "identity").exists():
        click.echo(f"building a {n}-entry log in {path} (once; kept for later runs)")
        started = time.perf_counter()
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        keyserver = [BIN / "keyserver"]
        subprocess.run(keyserver + ["init", "--instance", instance, "--server-name",
                                    "bench.example", "--url", "http://127.0.0.1"],
                       check=True, capture_output=True, cwd=path)
        database = db.connect(str(instance / "keyserver.sqlite"), "OFF", create=False)
        tree = MemoryTree()
        with db.transaction(database):
            [(first, ts)] = database.conn.execute("SELECT entry, ts FROM chain").fetchall()
            tree.append(first)
            for start in range(1, n - 1, 100_000):
                rows = []
                for pos in range(start, min(n - 1, start + 100_000)):
                    entry = os.urandom(32) + b"\x01" + os.urandom(120)
                    tree.append(entry)
                    rows.append((pos, entry, entry[:32], entry[33:41], ts))
                database.conn.executemany(
                    "INSERT INTO chain (pos, entry, hash, nonce, ts) VALUES (?, ?, ?, ?, ?)",
                    rows)
            database.conn.execute("DELETE FROM tree_nodes")
            for level, hashes in enumerate(tree.levels):
                database.conn.executemany(
                    "INSERT INTO tree_nodes (level, idx, hash) VALUES (?, ?, ?)",
                    ((level, index, h) for index, h in enumerate(hashes)))
        database.close()
        for step in (["chain", "load", "-n", "1"], ["worker", "--once"]):
            subprocess.run(keyserver + step + ["--instance", instance], check=True,
                           capture_output=True, cwd=path)
        with sqlite3.connect(instance / "keyserver.sqlite") as conn:
            [(identity, pos)] = conn.execute(
                "SELECT identity, pos FROM identities ORDER BY pos DESC LIMIT 1")
            [(size,)] = conn.execute("SELECT max(tree_size) FROM checkpoints")
        if (pos, size) != (n - 1, n):
            raise click.ClickException(f"built {identity} at {pos} under a checkpoint of "
                                       f"size {size}, not at {n - 1} of {n}")
        (path / "identity").write_text(identity)
        click.echo(f"built in {time.perf_counter() - started:.0f} s")
    return instance, (path / "identity").read_text()


@main.command()
@click.option("-n", "entries", default=1_000_000, show_default=True, help="Log size.")
@click.option("--runs", default=7, show_default=True)
def light(entries: int, runs: int) -> None:
    """``keyclient lookup --light`` through the library: ``ServerSession.light_lookup``
    of the newest identity of an N-entry log (``light_instance``) over HTTP to
    gunicorn ``-w 2``, in-process (no interpreter start), in a new home each run:
    first contact (``add_server``: capabilities, key document) timed apart, then the
    light lookup (lookup with its inclusion proof, checkpoint and reply checked, the
    message opened), then a second one in the same home (a checkpoint now held)."""
    from client.session import ServerSession, add_server
    from client.store.home import Home

    instance, identity = light_instance(entries)
    results: dict[str, list[tuple[float, float]]] = {}
    with gunicorn(instance, 2) as (url, _):
        for _ in range(runs):
            folder = Path(tempfile.mkdtemp(dir=BENCH, prefix="light-home-"))
            try:
                home = Home(str(folder))
                for what, step in (
                        ("first contact (add_server)", lambda: add_server(home, url)),
                        ("light lookup", lambda: ServerSession(
                            home, "bench.example", url).light_lookup(identity)),
                        ("light lookup again, same home", lambda: ServerSession(
                            home, "bench.example", url).light_lookup(identity))):
                    started, cpu = time.perf_counter(), time.process_time()
                    step()
                    results.setdefault(what, []).append(
                        (time.perf_counter() - started, time.process_time() - cpu))
                home.db.close()
            finally:
                shutil.rmtree(folder)
    click.echo(f"light lookup of {identity} at position {entries - 1} of {entries:,} "
               f"(gunicorn -w 2), {runs} runs; load {os.getloadavg()[0]:.2f}:")
    for what, times in results.items():
        click.echo(f"  {what}: median {statistics.median(w for w, _ in times) * 1000:.1f} ms"
                   f" (client CPU {statistics.median(c for _, c in times) * 1000:.1f} ms); runs "
                   f"{', '.join(f'{w * 1000:.1f}' for w, _ in times)} ms")


@main.command()
@click.option("--connections", default=200, show_default=True, help="Slow connections.")
@click.option("--duration", default=20, show_default=True,
              help="Seconds of probing under the slow connections, per setup.")
def slow(connections: int, duration: int) -> None:
    """The share of a probe's requests (GET /v1/hashchain/head, a PUT with a body, one
    after the other, each on a new connection, 2 s timeout) answered within 1 s while
    N slow connections (slow headers, slow body at 1 byte/s, idle; reopened when the
    server closes them) are open: through nginx (deploy/nginx.conf) in front of
    gunicorn (deploy/gunicorn.conf.py), and against gunicorn alone, with its sync
    workers (-w 2) and with the deploy configuration."""
    sys.path.insert(0, str(ROOT / "tests"))
    from slowclients import (Nginx, SlowClients, gunicorn_command, nginx_binary,
                             probe_once, stop_group, wait_listening)

    nginx_binary()
    setups = [("nginx + gunicorn (deploy/: 3 gthread workers x 2 threads)", True, True, 3),
              ("gunicorn alone, -w 2 sync", False, False, 2),
              ("gunicorn alone, deploy/gunicorn.conf.py (3 gthread x 2)", False, True, 3)]
    rows = []
    with fresh_instance("slow") as instance:
        for title, proxied, deploy_config, workers in setups:
            port = free_port()
            log = instance.parent / f"gunicorn-{port}.log"
            env = {**os.environ, "KEYSERVER_INSTANCE": str(instance),
                   "KEYSERVER_TRUSTED_PROXIES": '["127.0.0.1"]'}
            with open(log, "wb") as out:
                server = subprocess.Popen(gunicorn_command(BIN, port, workers, deploy_config),
                                          env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True, cwd=instance.parent)
            nginx = None
            try:
                wait_listening(port, server, lambda: log.read_text(errors="replace"))
                url = f"http://127.0.0.1:{port}"
                for _ in range(200):
                    with contextlib.suppress(requests.RequestException):
                        requests.get(url + "/v1/hashchain/head", timeout=1)
                        break
                if proxied:
                    nginx = Nginx(instance.parent / f"nginx-{port}", free_port(), port)
                    url, target = nginx.url, nginx.port
                else:
                    target = port
                with SlowClients(target, connections) as attack:
                    time.sleep(1.5)
                    held = attack.open_count()
                    answers: list = []
                    end = time.monotonic() + duration
                    while time.monotonic() < end:
                        answers += probe_once(url, 2)
                        time.sleep(0.1)
                    reconnects = attack.reconnects
            finally:
                if nginx is not None:
                    nginx.stop()
                stop_group(server)
            fast = sum(status is not None and seconds < 1 for _, status, seconds in answers)
            latencies = sorted(seconds for _, status, seconds in answers if status is not None)
            p99 = (f"{latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000:.0f} ms"
                   if latencies else "none answered")
            rows.append((title, fast, len(answers), p99, held, reconnects))
            click.echo(f"  {title}: {fast}/{len(answers)} answered within 1 s "
                       f"({fast / len(answers):.1%}), p99 of those answered {p99}; "
                       f"{held} slow connections open, {reconnects} reopened")
    click.echo(f"slow: {connections} slow connections, {duration} s of probing per setup:")
    click.echo("| setup | answered within 1 s | share | p99 (answered) |")
    click.echo("|---|---|---|---|")
    for title, fast, total, p99, _, _ in rows:
        click.echo(f"| {title} | {fast} / {total} | {fast / total:.1%} | {p99} |")


@main.command()
@click.option("--rounds", default=24, show_default=True, help="kill -9 rounds.")
@click.option("--writers", default=8, show_default=True, help="Concurrent writers.")
@click.option("--max-writes", default=400, show_default=True,
              help="Each round kills after a random number of acknowledged writes, 1 to this.")
@click.option("--seed", default=1, show_default=True, help="Seed of those numbers.")
def crash(rounds: int, writers: int, max_writes: int, seed: int) -> None:
    """kill -9 of gunicorn's master and workers (deploy/gunicorn.conf.py, 2 workers)
    during sustained registrations, ROUNDS times on one instance, each at a random
    moment; after each, the acknowledged writes missing and ``chain verify``."""
    import random

    sys.path.insert(0, str(ROOT / "tests"))
    from crashloop import CrashLoop

    rng = random.Random(seed)
    totals = {"acknowledged": 0, "in_flight": 0, "lost": 0, "refused": 0, "unverified": 0}
    with fresh_instance("crash") as instance:
        loop = CrashLoop(BIN, instance, "bench.example", writers)
        started = time.perf_counter()
        for number in range(rounds):
            done = loop.round(rng.randint(1, max_writes), instance.parent / f"gunicorn-{number}.log")
            totals["acknowledged"] += done.acknowledged
            totals["in_flight"] += done.in_flight
            totals["lost"] = len(done.lost)   # every round checks all acknowledged so far
            totals["refused"] += len(done.refused)
            totals["unverified"] += not done.verified
            click.echo(f"  round {number + 1}: {done.acknowledged} acknowledged, "
                       f"{done.in_flight} in flight at the kill, {len(done.lost)} lost so far, "
                       f"{len(done.refused)} refused; {done.verify_output}")
        elapsed = time.perf_counter() - started
    click.echo(f"crash: {rounds} rounds of kill -9 in {elapsed:.0f} s, {writers} writers: "
               f"{totals['acknowledged']:,} acknowledged writes, {totals['lost']} lost, "
               f"{totals['in_flight']} in flight at the kills, {totals['refused']} refused, "
               f"chain verify failed after {totals['unverified']} rounds")


@main.command()
@click.option("--hold", default=40, show_default=True, help="Seconds the write lock is held.")
@click.option("--writers", default=2, show_default=True, help="Clients writing meanwhile.")
@click.option("--readers", default=4, show_default=True, help="Clients reading meanwhile.")
def lock(hold: int, writers: int, readers: int) -> None:
    """The database's write lock held from outside for HOLD seconds (the server's
    default REQUEST_WAIT_BOUND, 10 s), while clients write (each retrying its one
    registration at once after every 503) and read (GET /v1/hashchain/head, one after
    the other) on new connections: how each was answered, and the slowest answer.
    Against gunicorn with deploy/gunicorn.conf.py (gthread, 2 workers x 2 threads) and
    with plain sync workers (-w 2)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from lockholder import write_lock_held
    from slowclients import start_gunicorn, stop_group

    from client.clock import now_ms
    from client.protocol.encoding import b64decode
    from keyserver.loadgen import build_registrations

    rows = []
    for title, deploy_config in (("deploy/gunicorn.conf.py, -w 2 (gthread x 2)", True),
                                 ("-w 2 sync", False)):
        with fresh_instance("lock") as instance:
            port = free_port()
            server = start_gunicorn(BIN, instance, port, deploy_config,
                                    instance.parent / "gunicorn.log")
            url = f"http://127.0.0.1:{port}"
            try:
                head = b64decode(requests.get(url + "/v1/hashchain/head").json()["entry"])
                messages = build_registrations(("lock", "bench.example", 0, writers,
                                                head[:32], now_ms()))
                tokens = subprocess.run(
                    [BIN / "keyserver", "tokens", "mint", "-n", str(writers), "--instance",
                     instance], check=True, capture_output=True, text=True).stdout.split()
                answers: list[tuple[str, str, float]] = []   # (kind, status, seconds)
                stop = threading.Event()

                def timed(kind: str, send) -> str:
                    started = time.monotonic()
                    try:
                        status = str(send().status_code)
                    except requests.RequestException as exc:
                        status = type(exc).__name__
                    answers.append((kind, status, time.monotonic() - started))
                    return status

                def write(number: int) -> None:
                    message, token = messages[number], tokens[number]
                    path = f"{url}/v1/users/{message['content']['identity']}"
                    while not stop.is_set():
                        if timed("write", lambda: requests.put(
                                path, json={"uid_message": message}, timeout=60,
                                headers={"Authorization": f'PrivateToken token="{token}"'}
                                )) == "201":
                            return

                def read() -> None:
                    while not stop.is_set():
                        timed("read", lambda: requests.get(url + "/v1/hashchain/head",
                                                           timeout=60))
                        time.sleep(0.05)

                clients = ([threading.Thread(target=write, args=(n,)) for n in range(writers)]
                           + [threading.Thread(target=read) for _ in range(readers)])
                with write_lock_held(instance):
                    for thread in clients:
                        thread.start()
                    time.sleep(hold)
                time.sleep(2)
                stop.set()
                for thread in clients:
                    thread.join(70)
            finally:
                stop_group(server)
        for kind in ("write", "read"):
            mine = [(status, took) for k, status, took in answers if k == kind]
            statuses: dict[str, int] = {}
            for status, _ in mine:
                statuses[status] = statuses.get(status, 0) + 1
            slowest = max(took for _, took in mine)
            over = sum(took > 1 for _, took in mine)
            rows.append((title, kind, len(mine), statuses, over, slowest))
            click.echo(f"  {title}: {len(mine)} {kind}s answered {statuses}, {over} after "
                       f"more than 1 s, slowest {slowest:.2f} s")
    click.echo(f"lock: write lock held {hold} s, REQUEST_WAIT_BOUND 10 s (default), "
               f"{writers} writers, {readers} readers:")
    click.echo("| server | requests | answers | answered after more than 1 s | slowest |")
    click.echo("|---|---|---|---|---|")
    for title, kind, count, statuses, over, slowest in rows:
        answered = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
        click.echo(f"| {title} | {count} {kind}s | {answered} | {over} | {slowest:.2f} s |")


if __name__ == "__main__":
    main()
