"""The operator's ``keyserver`` command as people use it (issue 17): which instance
a command works on, names as typed, which token key issues, a busy port."""

from __future__ import annotations

import socket

import click
import flask
import pytest
from click.testing import CliRunner

from conftest import free_port
from keyserver import create_app
from keyserver.cli import main


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture
def no_instance_env(monkeypatch):
    monkeypatch.delenv("KEYSERVER_INSTANCE", raising=False)


def test_a_command_names_its_instance_or_asks_for_one(instance, tmp_path, monkeypatch,
                                                      no_instance_env):
    # Nothing named and nothing in the repository's instance/ folder.
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path",
                        lambda self: str(tmp_path / "empty"))
    result = invoke("chain", "verify")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: which instance? Name it with --instance PATH or "
                                     "$KEYSERVER_INSTANCE (create one with 'keyserver init')")

    # The repository's instance/ holds one: used, and said.
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(instance))
    result = invoke("chain", "verify")
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"keyserver: using the repository's instance {instance} (no "
                             "--instance or $KEYSERVER_INSTANCE given)\n")
    assert result.stdout.startswith("chain OK")

    # From the environment: said; from the command line: not repeated.
    result = invoke("chain", "verify", env={"KEYSERVER_INSTANCE": str(instance)})
    assert result.exit_code == 0
    assert result.stderr == f"keyserver: using the instance {instance} ($KEYSERVER_INSTANCE)\n"
    result = invoke("chain", "verify", "--instance", str(instance))
    assert result.exit_code == 0 and result.stderr == ""


def test_init_lowercases_the_server_name_and_domains(tmp_path):
    path = tmp_path / "upper"
    result = invoke("init", "--instance", str(path), "--server-name", "Keys.Example.ORG",
                    "--url", "http://127.0.0.1:5000", "--domain", "Example.org")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Created keyserver instance for keys.example.org in")
    app = create_app(instance_path=str(path))
    assert app.config["KEYSERVER_NAME"] == "keys.example.org"
    assert app.config["DOMAINS"] == ["example.org"]
    assert invoke("chain", "verify", "--instance", str(path)).exit_code == 0

    refused = invoke("init", "--instance", str(tmp_path / "bad"), "--server-name",
                     "keys.example.org:5000", "--url", "http://127.0.0.1:5000")
    assert refused.exit_code == 1 and "not a valid server name" in refused.output
    assert not (tmp_path / "bad").exists()


def test_tokens_stats_marks_the_issuing_key(instance):
    def stats() -> list[str]:
        result = invoke("tokens", "stats", "--instance", str(instance))
        assert result.exit_code == 0, result.output
        return [line for line in result.stdout.splitlines() if line.startswith("key ")]

    [only] = stats()
    assert only.endswith("(listed on the chain, ISSUING: vouchers and mint sign with it)")
    rotated = invoke("tokens", "rotate-key", "--instance", str(instance))
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.stdout.split()[3]
    keys = stats()
    assert len(keys) == 2
    assert [line.split()[1] for line in keys if "ISSUING" in line] == [new_key]


def test_run_on_a_busy_port_fails_before_announcing(instance):
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        result = invoke("run", "--instance", str(instance), "--port", str(port))
    assert result.exit_code == 1
    assert "Serving" not in result.output
    assert result.output.strip() == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use (is another "
        "server running there? choose another --port)")


def _help_texts(command: click.Command, path: list[str]):
    yield " ".join(path), command.get_help(click.Context(command, info_name=" ".join(path)))
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _help_texts(sub, path + [name])


@pytest.mark.parametrize("name", ["keyserver", "keyclient"])
def test_every_help_text_is_in_plain_words(name):
    """Operators and users read the help, not the spec: no section references in any
    command's help (the spec's terms stay in the docs and in evidence messages)."""
    from client.cli import main as keyclient

    root = {"keyserver": main, "keyclient": keyclient}[name]
    texts = dict(_help_texts(root, [name]))
    assert len(texts) > 20
    assert [path for path, text in texts.items() if "§" in text] == []
