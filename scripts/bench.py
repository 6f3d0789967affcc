"""Benchmarks (not tests): each subcommand builds what it needs under .bench/,
starts the production server setup (gunicorn) on a free local port, measures,
and prints figures to paste into docs/benchmarks.md.

    scripts/bench chain -n 1000000      download + verify the whole chain over HTTP
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@contextlib.contextmanager
def gunicorn(instance: Path, workers: int):
    port = free_port()
    env = {**os.environ, "KEYSERVER_INSTANCE": str(instance)}
    process = subprocess.Popen(
        [BIN / "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level",
         "warning", "keyserver:create_app()"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(requests.ConnectionError):
                requests.get(url + "/v1/hashchain/head", timeout=1)
                break
            time.sleep(0.05)
        yield url, process
    finally:
        process.terminate()
        process.wait()


def worker_memory_kib(master: int) -> dict[str, int]:
    """Current and peak resident memory summed over gunicorn's workers."""
    total = {"VmRSS": 0, "VmHWM": 0}
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in total:
                total[name] += int(value.split()[0])
    return total


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
    from client.api import KeyserverAPI, download_chain
    from client.chainstate import ChainState

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


if __name__ == "__main__":
    main()
