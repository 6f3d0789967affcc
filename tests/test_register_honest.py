"""Honest registration through the real ``keyclient`` CLI (issue 17, items 3-5): no
key survives an unfinished registration and a retry works; ``recover`` reads what
the paper tells the user to type; what the server would refuse for known reasons
is refused before any key is made or paper printed; a normalized name is shown."""

import re

from click.testing import CliRunner

from client.cli import main
from conftest import keyclient, registered_home

PAPER = "KEYCLIENT ESCROW KEY"


def run(home, *args, input=None):
    return CliRunner().invoke(main, ["--home", str(home), *args], input=input)


def keys(home):
    folder = home / "keys"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_aborted_confirmation_leaves_no_key_and_a_retry_works(app_server, tmp_path,
                                                               cheap_keystore):
    home = registered_home(app_server, tmp_path)
    refused = run(home, "register", "alice@example.org", input="n\n")
    assert refused.exit_code == 1 and "cancelled" in refused.output
    assert PAPER in refused.output and keys(home) == []
    closed = run(home, "register", "alice@example.org", input="")   # the terminal went away
    assert closed.exit_code != 0 and keys(home) == []
    assert "1 available" in keyclient(home, "tokens", "list").output
    retry = run(home, "register", "alice@example.org", input="y\n")
    assert retry.exit_code == 0, retry.output
    assert keys(home) == ["alice_at_example.org.sigkey.key"]


def test_interrupt_at_the_paper_question_leaves_no_key(app_server, tmp_path, cheap_keystore,
                                                       monkeypatch):
    import click

    from client.interrupts import Interrupted

    home = registered_home(app_server, tmp_path)

    def hang_up(*args, **kwargs):
        raise Interrupted(1)   # SIGHUP, as a closed terminal sends it

    with monkeypatch.context() as patched:
        patched.setattr(click, "confirm", hang_up)
        result = run(home, "register", "alice@example.org")
    assert result.exit_code != 0 and keys(home) == []
    assert run(home, "register", "alice@example.org", "--yes").exit_code == 0


def test_keys_of_an_older_unfinished_registration_are_explained(app_server, tmp_path,
                                                                cheap_keystore):
    import nacl.signing

    from client.store.keystore import Keystore

    home = registered_home(app_server, tmp_path)
    store = Keystore(str(home / "keys"), "correct horse")
    for role in ("sigkey", "escrow"):        # what an older keyclient left behind
        store.put_signing_key(f"alice_at_example.org.{role}", nacl.signing.SigningKey.generate())
    stuck = run(home, "register", "alice@example.org", "--yes")
    assert stuck.exit_code == 1
    assert "unfinished registration" in stuck.output and "--discard-unfinished" in stuck.output
    assert PAPER not in stuck.output
    done = run(home, "register", "alice@example.org", "--yes", "--discard-unfinished")
    assert done.exit_code == 0, done.output
    assert keys(home) == ["alice_at_example.org.sigkey.key"]


def test_recover_from_the_numbered_lines_alone(app_server, tmp_path, cheap_keystore):
    home = registered_home(app_server, tmp_path, tokens=3)
    paper = tmp_path / "paper.txt"
    assert run(home, "register", "alice@example.org", "--yes", "--escrow-out",
               str(paper)).exit_code == 0
    typed = tmp_path / "typed.txt"
    lines = [line for line in paper.read_text().splitlines() if re.match(r"\d+:", line)]
    assert len(lines) == 4
    typed.write_text("\n".join(line.lower() for line in lines) + "\n")
    result = run(home, "recover", "alice@example.org", "--escrow", str(typed))
    assert result.exit_code == 0, result.output
    assert "recovered alice@example.org" in result.output
    whole = run(home, "recover", "alice@example.org", "--escrow", str(paper))
    assert whole.exit_code == 0, whole.output
    nothing = tmp_path / "empty.txt"
    nothing.write_text("hello\n")
    empty = run(home, "recover", "alice@example.org", "--escrow", str(nothing))
    assert empty.exit_code == 1 and "numbered" in empty.output


def test_refused_before_any_paper(app_server, tmp_path, cheap_keystore):
    home = registered_home(app_server, tmp_path)
    reserved = run(home, "register", "admin@example.org", "--yes")
    assert reserved.exit_code == 1 and "reserved" in reserved.output
    foreign = run(home, "register", "alice@example.net", "--yes")
    assert foreign.exit_code == 1 and "example.net" in foreign.output
    assert "serves example.org" in foreign.output
    assert run(home, "register", "bob@example.org", "--yes").exit_code == 0
    other = tmp_path / "other"
    keyclient(other, "server", "add", app_server.url)
    keyclient(other, "tokens", "add", *[t.split('"')[1] for t in app_server.mint(1)])
    taken = run(other, "register", "bob@example.org", "--yes")
    assert taken.exit_code == 1 and "already registered" in taken.output
    for result in (reserved, foreign, taken):
        assert PAPER not in result.output
    assert keys(other) == []
    assert "1 available" in keyclient(other, "tokens", "list").output


def test_a_rewritten_name_is_shown_and_confirmed(app_server, tmp_path, cheap_keystore):
    home = registered_home(app_server, tmp_path)
    declined = run(home, "register", "Jo1@example.org", input="n\n")
    assert declined.exit_code == 1
    assert "Jo1@example.org is written iol@example.org" in declined.output
    assert PAPER not in declined.output and keys(home) == []
    accepted = run(home, "register", "Jo1@example.org", input="y\ny\n")
    assert accepted.exit_code == 0, accepted.output
    assert "registered iol@example.org" in accepted.output
    looked = run(home, "lookup", "Jo1@example.org")
    assert looked.exit_code == 0, looked.output
    assert "is written iol@example.org" in looked.output
    plain = run(home, "lookup", "iol@example.org")
    assert "is written" not in plain.output
