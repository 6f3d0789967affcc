"""Operator commands: ``keyserver chain verify`` and ``keyserver chain load``."""

import pytest

from keyserver import chainstore, db


def test_chain_verify_ok(runner):
    result = runner.invoke(args=["chain", "verify"])
    assert result.exit_code == 0 and "chain OK: 1 entries" in result.output


def test_chain_load_appends_verified_entries(app, runner):
    result = runner.invoke(args=["chain", "load", "-n", "30"])
    assert result.exit_code == 0, result.output
    assert "chain length now 31" in result.output
    with app.app_context():
        assert chainstore.verify_stored(db.get_db()) == 31
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
        entry = chainstore.entry_at(db.get_db(), 7).entry
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


def test_commands_need_an_instance(tmp_path):
    from click.testing import CliRunner

    from keyserver.cli import main

    result = CliRunner().invoke(main, ["chain", "verify", "--instance", str(tmp_path / "none")])
    assert result.exit_code == 1 and "keyserver init" in result.output
