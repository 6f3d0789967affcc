"""``keyserver init``: the instance folder and chain entry 0 (§7.2)."""

import os
import stat

import pytest

from client.protocol.encoding import b64decode
from client.protocol.keys import verify_detached
from client.protocol.hashchain import ZERO_HASH, search_identity, verify_entries
from client.protocol.signedjson import verify_signed_json
from client.protocol.uidmessage import decrypt_uid_message, parse_uid_message
from keyserver.http.context import current_key
from keyserver.service import signing, tokenkeys, uids
from keyserver.storage import chain, db
from keyserver.cli import main
from keyserver.instance import InstanceExists, init_instance
from conftest import fail_after


def test_instance_files_and_modes(instance):
    assert {"config.py", "keyserver.sqlite", "signing.key"} <= set(os.listdir(instance))
    assert stat.S_IMODE(os.stat(instance / "signing.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(instance).st_mode) == 0o700
    assert "KEYSERVER_NAME = 'example.org'" in (instance / "config.py").read_text()


def modes(folder) -> dict[str, int]:
    """Path under ``folder`` (itself ".") -> permission bits, for every entry."""
    found = {".": stat.S_IMODE(os.stat(folder).st_mode)}
    for parent, folders, names in os.walk(folder):
        for name in folders + names:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, folder)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def private(found: dict[str, int], folder) -> bool:
    return all(mode == (0o700 if os.path.isdir(os.path.join(folder, path)) else 0o600)
               for path, mode in found.items())


@pytest.fixture
def loose_umask():
    """Files and folders created as everyone's, as a careless umask makes them."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.parametrize("premade", [False, True], ids=["new folder", "existing folder"])
def test_init_makes_everything_private(tmp_path, loose_umask, premade):
    """The instance folder 0700 and every file in it 0600: the database holds the
    private indexes, voucher hashes and spent tokens; also over an existing folder
    with loose modes and what was already in it."""
    path = tmp_path / "instance"
    if premade:
        path.mkdir(mode=0o777)
        (path / "keyserver.sqlite.lock").write_bytes(b"")
        (path / "keyserver.sqlite.lock").chmod(0o666)
        (path / "notes").mkdir(mode=0o755)
        (path / "notes" / "readme").write_text("mine")
    init_instance(str(path), "example.org", "http://127.0.0.1:5000", ["example.org"])
    found = modes(path)
    assert {"config.py", "keyserver.sqlite", "keyserver.sqlite.lock", "signing.key",
            "token_keys"} <= set(found)
    assert private(found, path), found


def test_the_server_keeps_its_database_files_private(tmp_path, loose_umask):
    """The WAL and SHM files a running server creates take the database's 0600, and a
    database made with looser modes (an older instance) is tightened when opened."""
    from conftest import UserActions
    from keyserver import create_app

    path = tmp_path / "instance"
    init_instance(str(path), "example.org", "http://127.0.0.1:5000", ["example.org"])
    for name in ("keyserver.sqlite", "keyserver.sqlite.lock"):
        (path / name).chmod(0o644)
    app = create_app({"TESTING": True}, instance_path=str(path))
    UserActions(app.test_client()).register("alice@example.org")
    found = modes(path)
    assert {"keyserver.sqlite-wal", "keyserver.sqlite-shm"} <= set(found)
    assert private(found, path), found


def test_entry_zero_is_the_servers_own_uid_message(app):
    with app.app_context():
        database = db.get_db()
        entries = chain.read_entries(database, 0, 10)
        assert len(entries) == 1
        assert verify_entries(entries, ZERO_HASH) == entries[0][:32]
        [(pos, uid_hash)] = search_identity(entries, "keyserver@example.org")
        assert pos == 0
        key = current_key()
        reply = uids.fetch_reply(database, entries[0][121:153])
    verify_signed_json(reply, "example.org", key.key_id, bytes(key.signing_key.verify_key))
    assert reply["entry"]["hashchain_pos"] == 0
    assert b64decode(reply["entry"]["hashchain_entry"]) == entries[0]
    message = parse_uid_message(decrypt_uid_message(
        b64decode(reply["entry"]["uid_message_encrypted"]), uid_hash))
    assert message.identity == "keyserver@example.org"
    assert message.msgcount == 0 and message.lastentry == bytes(32)
    assert message.sigkey.pubkey == bytes(key.signing_key.verify_key)
    assert message.not_after_ts - message.not_before_ts == app.config["MAX_UID_LIFETIME"]
    assert verify_detached(message.sigkey.pubkey, message.content_bytes, message.selfsignature)


def test_init_refuses_to_overwrite(instance):
    before = (instance / "signing.key").read_bytes()
    with pytest.raises(InstanceExists):
        init_instance(str(instance), "other.org", "http://x", ["other.org"])
    assert (instance / "signing.key").read_bytes() == before


def test_init_cli_errors_are_messages(tmp_path):
    from click.testing import CliRunner

    runner = CliRunner()
    result = runner.invoke(main, ["init", "--instance", str(tmp_path / "i"), "--server-name",
                                  "Bad Name", "--url", "http://x"])
    assert result.exit_code == 1 and "not a valid server name" in result.output
    assert not (tmp_path / "i" / "config.py").exists()
    ok = runner.invoke(main, ["init", "--instance", str(tmp_path / "i"), "--server-name",
                              "example.org", "--url", "http://x"])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(main, ["init", "--instance", str(tmp_path / "i"), "--server-name",
                                 "example.org", "--url", "http://x"])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output


def tree(root) -> list[str]:
    """Every path under ``root``, relative: what a failed init must leave unchanged."""
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, dirs, files in os.walk(root) for name in dirs + files)


@pytest.mark.parametrize("folder", ["new", "empty", "foreign"])
@pytest.mark.parametrize("module, name", [
    (signing, "write_keys"), (db, "init_db"), (uids, "store_uid_message"),
    (tokenkeys, "write_secret"), (tokenkeys, "fsync_directory"),
], ids=["signing-key", "schema", "entry-0", "token-key-file", "token-key-row"])
@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError("disk full")],
                         ids=["interrupt", "oserror"])
def test_failed_init_leaves_nothing_behind(tmp_path, monkeypatch, folder, module, name, error):
    path = tmp_path / "instance"
    if folder != "new":
        path.mkdir()
    if folder == "foreign":
        (path / "README").write_text("the operator's")
        (path / "tls").mkdir()
        (path / "tls" / "cert.pem").write_text("cert")
    before = tree(tmp_path)
    with monkeypatch.context() as patch:
        fail_after(patch, module, name, error)
        with pytest.raises(type(error)):
            init_instance(str(path), "example.org", "http://x", ["example.org"])
    assert tree(tmp_path) == before
    app = init_instance(str(path), "example.org", "http://x", ["example.org"])
    with app.app_context():
        assert chain.verify_stored(db.get_db()) == 1
    if folder == "foreign":
        assert (path / "tls" / "cert.pem").read_text() == "cert"


def test_new_instance_appears_only_when_complete(tmp_path, monkeypatch):
    path = tmp_path / "instance"
    seen = []
    real = tokenkeys.create_key

    def create_key(*args):
        seen.append(path.exists())
        return real(*args)

    monkeypatch.setattr(tokenkeys, "create_key", create_key)
    app = init_instance(str(path), "example.org", "http://x", ["example.org"])
    assert seen == [False]
    assert app.instance_path == str(path) and os.listdir(tmp_path) == ["instance"]


def test_init_refuses_an_expired_token_key_and_leaves_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setenv("KEYSERVER_TOKEN_KEY_LIFETIME", "0")
    result = CliRunner().invoke(main, ["init", "--instance", str(tmp_path / "i"),
                                       "--server-name", "example.org", "--url", "http://x"])
    assert result.exit_code == 1 and "TOKEN_KEY_LIFETIME must be" in result.output
    assert os.listdir(tmp_path) == []
