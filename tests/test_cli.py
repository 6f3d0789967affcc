"""Operator commands: ``keyserver chain verify`` and ``keyserver chain load``."""

import pytest

from client.protocol.errors import ChainError
from keyserver.storage import chain, db


def test_chain_verify_ok(runner):
    result = runner.invoke(args=["chain", "verify"])
    assert result.exit_code == 0 and "chain OK: 1 entries" in result.output


def test_chain_load_appends_verified_entries(app, runner):
    result = runner.invoke(args=["chain", "load", "-n", "30"])
    assert result.exit_code == 0, result.output
    assert "chain length now 31" in result.output
    with app.app_context():
        assert chain.verify_stored(db.get_db()) == 31
        count = db.get_db().conn.execute("SELECT count(*) FROM identities").fetchone()[0]
    assert count == 31


def tamper(app, sql, *args):
    with app.app_context():
        database = db.get_db()
        database.conn.execute("PRAGMA foreign_keys=OFF")
        database.conn.execute(sql, args)


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_chain_verify_reports_first_bad_position(app, runner, how):
    runner.invoke(args=["chain", "load", "-n", "20"])
    with app.app_context():
        entry = chain.entry_at(db.get_db(), 7).entry
    if how == "flip":
        tamper(app, "UPDATE chain SET entry = ? WHERE pos = 7",
               entry[:60] + bytes([entry[60] ^ 0xFF]) + entry[61:])
    elif how == "truncate":
        tamper(app, "UPDATE chain SET entry = ? WHERE pos = 7", entry[:152])
    else:
        tamper(app, "DELETE FROM chain WHERE pos = 7")
    result = runner.invoke(args=["chain", "verify"])
    assert result.exit_code == 1
    assert "chain broken at position 7" in result.output


@pytest.mark.parametrize("statements, position", [
    (["DELETE FROM chain"], 0),
    (["DELETE FROM chain", "DELETE FROM uids", "DELETE FROM identities", "DELETE FROM history"],
     0),
    (["DELETE FROM chain WHERE pos >= 18"], 18),
    (["DELETE FROM chain WHERE pos = 20"], 20),
    (["UPDATE chain SET entry = 'text' WHERE pos = 7"], 7),
    (["UPDATE chain SET entry = CAST(entry AS TEXT) WHERE pos = 7"], 7),
    (["UPDATE chain SET entry = 42 WHERE pos = 7"], 7),
    (["UPDATE chain SET hash = randomblob(32) WHERE pos = 7"], 7),
    (["UPDATE chain SET hash = CAST(hash AS TEXT) WHERE pos = 7"], 7),
    (["UPDATE chain SET nonce = randomblob(8) WHERE pos = 7"], 7),
], ids=["chain-emptied", "all-emptied", "cut-end", "cut-head", "text", "text-of-entry",
        "integer", "hash-column", "hash-column-text", "nonce-column"])
def test_chain_verify_reports_stored_corruption(app, runner, statements, position):
    """Columns the server reads in place of the entry, entries of the wrong type, and
    a chain cut at its end (or to nothing) are broken, reported without a traceback."""
    runner.invoke(args=["chain", "load", "-n", "20"])
    for sql in statements:
        tamper(app, sql)
    result = runner.invoke(args=["chain", "verify"])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert f"chain broken at position {position}:" in result.output


@pytest.mark.parametrize("broken_link", [None, 5])
@pytest.mark.parametrize("batch", [1, 3, 4, 7, 8, 100])
def test_verify_stored_reports_the_first_bad_position_across_batches(app, runner, batch,
                                                                     broken_link):
    runner.invoke(args=["chain", "load", "-n", "20"])
    with app.app_context():
        assert chain.verify_stored(db.get_db(), batch) == 21
        entry = chain.entry_at(db.get_db(), 5).entry
    tamper(app, "UPDATE chain SET nonce = randomblob(8) WHERE pos = 12")
    tamper(app, "DELETE FROM chain WHERE pos = 9")
    tamper(app, "UPDATE chain SET hash = randomblob(32) WHERE pos = 7")
    if broken_link is not None:
        tamper(app, "UPDATE chain SET entry = ? WHERE pos = 5",
               entry[:60] + bytes([entry[60] ^ 0xFF]) + entry[61:])
    with app.app_context(), pytest.raises(ChainError) as caught:
        chain.verify_stored(db.get_db(), batch)
    assert caught.value.position == (broken_link or 7)


def test_commands_need_an_instance(tmp_path):
    from click.testing import CliRunner

    from keyserver.cli import main

    result = CliRunner().invoke(main, ["chain", "verify", "--instance", str(tmp_path / "none")])
    assert result.exit_code == 1 and "keyserver init" in result.output


def test_chain_verify_checks_the_configured_name_against_entry_0(instance, monkeypatch):
    from keyserver import create_app

    monkeypatch.setenv("KEYSERVER_KEYSERVER_NAME", "other.example.org")
    result = create_app(instance_path=str(instance)).test_cli_runner().invoke(
        args=["chain", "verify"])
    assert result.exit_code == 1
    assert "entry 0 is not keyserver@other.example.org's" in result.output
