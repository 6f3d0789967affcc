"""The configuration is checked when the app is made: a wrong value stops the
server and every ``keyserver`` command at its start, with the key's name."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import keyserver_command
from keyserver import create_app
from keyserver.cli import main
from keyserver.config import ConfigError


def make(instance, monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(f"KEYSERVER_{key}", value)
    return create_app({"TESTING": True}, instance_path=str(instance))


@pytest.mark.parametrize("value", ["False", "false", "no", "OFF", "0"])
def test_lookup_can_be_turned_off_with_any_usual_word(instance, monkeypatch, value):
    """Flask keeps ``False`` (not JSON) as a string, which Python takes as true:
    lookups, which reveal who looks for whom, would quietly stay on."""
    app = make(instance, monkeypatch, LOOKUP_ENABLED=value)
    assert app.config["LOOKUP_ENABLED"] is False
    answer = app.test_client().get("/v1/users/keyserver@example.org")
    assert answer.status_code == 404 and "lookup is disabled" in answer.json["error"]


@pytest.mark.parametrize("key, value", [
    ("LOOKUP_ENABLED", "maybe"),
    ("MAX_CHUNK", "abc"),
    ("MAX_CHUNK", "0"),
    ("DEFAULT_CHUNK", "-1"),
    ("MAX_REQUEST_BYTES", "abc"),
    ("MAX_REQUEST_BYTES", "0"),
    ("MAX_UID_LIFETIME", "abc"),
    ("MAX_UID_LIFETIME", "true"),
    ("RECLAIM_GRACE", "-1"),
    ("KEYINIT_FETCH_RATE_PER_ADDRESS", "-1"),
    ("MAX_TOKENS_PER_ISSUE", "1.5"),
    ("TOKEN_KEY_LIFETIME", "abc"),
    ("SQLITE_SYNCHRONOUS", "bogus"),
    ("SQLITE_SYNCHRONOUS", "OFF; x"),
    ("KEYSERVER_NAME", "Bad Name"),
    ("KEYSERVER_NAME", "keys.example.org:8000"),
    ("KEYSERVER_NAME", "a." * 122 + "org"),      # too long for keyserver@<name>
    ("BASE_URL", "keys.example.org"),
    ("TILES_URL", "tiles.example.org"),
    ("TILES_URL", "5"),
    ("DOMAINS", "not a list"),
    ("DOMAINS", "[]"),
    ("DOMAINS", '["bad..dom"]'),
    ("DOMAINS", "[1, 2]"),
    ("RESERVED_LOCALPARTS", "x"),
    ("KEYINIT_REPOSITORY_URIS", '["ftp://x"]'),
    ("ALLOWED_REPOURIS", '["ftp://x"]'),
    ("ALLOWED_REPOURIS", '"https://keys.example.net"'),
    ("TOKEN_PRICES", '"abc"'),
    ("TOKEN_PRICES", '{"foo": 1}'),
    ("TOKEN_PRICES", '{"create_uid": 5, "update_uid": 1, "add_keyinit": 1}'),
    ("TOKEN_PRICES", '{"create_uid": -1, "update_uid": 1, "add_keyinit": 1}'),
    ("WITNESS_KEY_FILE", "/etc/witness.key"),
    ("SIGNING_KEY_FILE", "keys/signing.key"),
    ("DATABASE", ".."),
])
def test_a_bad_value_is_refused_naming_its_key(instance, monkeypatch, key, value):
    with pytest.raises(ConfigError, match=key):
        make(instance, monkeypatch, **{key: value})


def test_values_are_normalized_for_the_code_that_reads_them(instance, monkeypatch):
    app = make(instance, monkeypatch, SQLITE_SYNCHRONOUS="normal", MAX_CHUNK="500",
               LOOKUP_ENABLED="1")
    assert app.config["SQLITE_SYNCHRONOUS"] == "NORMAL"
    assert app.config["DEFAULT_CHUNK"] == 500            # bounded by the smaller MAX_CHUNK
    assert app.config["LOOKUP_ENABLED"] is True
    assert len(app.test_client().get("/v1/hashchain?start=0").json["entries"]) == 1


def test_a_syntax_error_in_config_py_names_the_line(instance):
    with open(instance / "config.py", "a") as handle:
        handle.write("DOMAINS = [\n")
    with pytest.raises(ConfigError, match=r"config.py, line \d+"):
        create_app(instance_path=str(instance))


def keyserver(*args: str):
    return CliRunner().invoke(main, list(args))


def test_commands_stop_at_a_bad_configuration_in_one_line(instance, monkeypatch):
    monkeypatch.setenv("KEYSERVER_TOKEN_PRICES", '{"foo": 1}')
    result = keyserver("tokens", "stats", "--instance", str(instance))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: configuration: TOKEN_PRICES must give")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("damage", ["garbage", "empty"])
def test_commands_on_a_damaged_database_fail_in_one_line(instance, damage):
    for wal in instance.glob("keyserver.sqlite-*"):
        wal.unlink()
    (instance / "keyserver.sqlite").write_bytes(b"not a database" * 100 if damage == "garbage"
                                                else b"")
    # A process of its own: this one still has the instance open from its creation.
    done = subprocess.run(keyserver_command("tokens", "stats", "--instance", str(instance)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: database: ") and "Traceback" not in done.stderr


def test_command_options_are_bounded(instance):
    path = str(instance)
    for args, complaint in [
        (["run", "--port", "99999", "--instance", path], "99999 is not in the range"),
        (["vouchers", "create", "--tokens", "9" * 23, "--instance", path], "not in the range"),
        (["vouchers", "create", "--tokens", "1", "--expires", "0d", "--instance", path],
         "a number from 1 to 999999"),
        (["vouchers", "create", "--tokens", "1", "--expires", "9" * 20 + "d",
          "--instance", path], "a number from 1 to 999999"),
        (["chain", "load", "-n", "1", "--domain", "other.org", "--instance", path],
         "'other.org' is not served here"),
    ]:
        result = keyserver(*args)
        assert result.exit_code == 2 and complaint in result.output, (args, result.output)
    with sqlite3.connect(instance / "keyserver.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM chain").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM vouchers").fetchone() == (0,)
    conn.close()


def test_gunicorn_refuses_to_start_with_a_bad_configuration(instance, monkeypatch):
    gunicorn = Path(sys.executable).parent / "gunicorn"
    done = subprocess.run(
        [str(gunicorn), "-w", "1", "-b", "127.0.0.1:0", "keyserver:create_app()"],
        env={"KEYSERVER_INSTANCE": str(instance), "KEYSERVER_LOOKUP_ENABLED": "maybe",
             "PATH": str(gunicorn.parent)},
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "LOOKUP_ENABLED must be true or false, not 'maybe'" in done.stderr
