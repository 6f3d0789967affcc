"""The keystore (private keys at rest) and reading the passphrase."""

import json
import os
import stat

import nacl.public
import nacl.pwhash.argon2id as argon2id
import nacl.signing
import pytest

import client.store.keystore as keystore
from client.protocol.encoding import b64decode, b64encode
from client.protocol.errors import ClientError
from client.store.keystore import (DEFAULT_KDF, KdfParams, KeyExists, KeyNotFound, Keystore,
                                   KeystoreCorrupt, KeystoreError, WrongKeyType, WrongPassphrase,
                                   open_keystore)
from client.store.paper import BadBackup

CHEAP = KdfParams.cheapest()
PASSPHRASE = "correct horse battery staple"
SEED = bytes(range(32))


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "keys")


@pytest.fixture
def store(store_path):
    return Keystore(store_path, PASSPHRASE, CHEAP)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _key_file(store, name):
    return os.path.join(store.path, name + ".key")


def _edit(store, name, change):
    """Rewrite a key file's JSON through ``change(obj)``."""
    path = _key_file(store, name)
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    change(obj)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


# --- Keystore ------------------------------------------------------------------------

def test_errors_are_client_errors():
    for cls in (WrongPassphrase, KeystoreCorrupt, KeyNotFound, KeyExists, WrongKeyType,
                BadBackup):
        assert issubclass(cls, ClientError)
    assert not issubclass(WrongPassphrase, KeystoreCorrupt)
    assert not issubclass(KeystoreCorrupt, WrongPassphrase)


def test_signing_key_round_trip(store, store_path):
    key = nacl.signing.SigningKey.generate()
    store.put_signing_key("sigkey", key)
    assert bytes(store.get_signing_key("sigkey")) == bytes(key)
    reopened = Keystore(store_path, PASSPHRASE, CHEAP)
    assert bytes(reopened.get_signing_key("sigkey")) == bytes(key)
    assert reopened.get_signing_key("sigkey").verify_key == key.verify_key


def test_private_key_round_trip(store, store_path):
    key = nacl.public.PrivateKey.generate()
    store.put_private_key("pubkey-1", key)
    reopened = Keystore(store_path, PASSPHRASE, CHEAP)
    assert bytes(reopened.get_private_key("pubkey-1")) == bytes(key)
    assert reopened.get_private_key("pubkey-1").public_key == key.public_key


def test_file_format(store):
    store.put_signing_key("sigkey", nacl.signing.SigningKey(SEED))
    with open(_key_file(store, "sigkey"), "rb") as f:
        data = f.read()
    obj = json.loads(data)
    assert set(obj) == {"version", "function", "kdf", "check", "nonce", "ciphertext"}
    assert obj["version"] == 1 and obj["function"] == "ed25519"
    assert obj["kdf"]["alg"] == "argon2id"
    assert (obj["kdf"]["opslimit"], obj["kdf"]["memlimit"]) == (CHEAP.opslimit, CHEAP.memlimit)
    assert len(b64decode(obj["kdf"]["salt"])) == argon2id.SALTBYTES
    assert len(b64decode(obj["nonce"])) == 24
    assert b64encode(SEED) not in data.decode()
    assert data.endswith(b"}\n")


def test_modes(store_path):
    store = Keystore(store_path, PASSPHRASE, CHEAP)
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    assert _mode(store_path) == 0o700
    assert _mode(_key_file(store, "sigkey")) == 0o600


def test_loose_existing_folder_is_tightened(tmp_path):
    path = tmp_path / "keys"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    Keystore(str(path), PASSPHRASE, CHEAP)
    assert _mode(path) == 0o700


def test_write_leaves_no_temporary_file(store):
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate(), overwrite=True)
    with pytest.raises(KeyExists):
        store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    assert os.listdir(store.path) == ["sigkey.key"]


def test_put_refuses_to_overwrite_unless_asked(store):
    first, second = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    store.put_signing_key("sigkey", first)
    with pytest.raises(KeyExists):
        store.put_signing_key("sigkey", second)
    assert bytes(store.get_signing_key("sigkey")) == bytes(first)
    store.put_signing_key("sigkey", second, overwrite=True)
    assert bytes(store.get_signing_key("sigkey")) == bytes(second)


def test_names_and_delete(store):
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    store.put_private_key("pubkey", nacl.public.PrivateKey.generate())
    open(os.path.join(store.path, ".sigkey.abc.tmp"), "w").close()  # a crashed write
    assert store.names() == ["pubkey", "sigkey"]
    store.delete("sigkey")
    assert store.names() == ["pubkey"]
    assert not os.path.exists(_key_file(store, "sigkey"))
    with pytest.raises(KeyNotFound):
        store.get_signing_key("sigkey")
    with pytest.raises(KeyNotFound):
        store.delete("sigkey")


def test_delete_overwrites_before_removing(store, monkeypatch):
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    seen = []

    def unlink(path, real=os.unlink):
        with open(path, "rb") as f:
            seen.append(f.read())
        real(path)

    monkeypatch.setattr(keystore.os, "unlink", unlink)
    store.delete("sigkey")
    assert len(seen) == 1 and seen[0] and set(seen[0]) == {0}


def test_missing_key(store):
    with pytest.raises(KeyNotFound):
        store.get_signing_key("nope")


def test_wrong_key_type(store):
    store.put_private_key("pubkey", nacl.public.PrivateKey.generate())
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    with pytest.raises(WrongKeyType):
        store.get_signing_key("pubkey")
    with pytest.raises(WrongKeyType):
        store.get_private_key("sigkey")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../up", "a b", "x" * 65, "é"])
def test_invalid_names(store, name):
    with pytest.raises(KeystoreError):
        store.put_signing_key(name, nacl.signing.SigningKey.generate())


def test_empty_passphrase_refused(store_path):
    with pytest.raises(KeystoreError):
        Keystore(store_path, "", CHEAP)


def test_wrong_passphrase_on_read(store, store_path):
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    other = Keystore(store_path, "not the passphrase", CHEAP)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        other.get_signing_key("sigkey")
    with pytest.raises(WrongPassphrase):
        other.check_passphrase()


def test_wrong_passphrase_on_write(store, store_path):
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    other = Keystore(store_path, "not the passphrase", CHEAP)
    with pytest.raises(WrongPassphrase):
        other.put_private_key("pubkey", nacl.public.PrivateKey.generate())
    with pytest.raises(WrongPassphrase):
        other.put_signing_key("sigkey", nacl.signing.SigningKey.generate(), overwrite=True)
    assert os.listdir(store_path) == ["sigkey.key"]


def test_empty_store_accepts_any_passphrase(store_path):
    Keystore(store_path, "first", CHEAP).check_passphrase()
    Keystore(store_path, "second", CHEAP).put_signing_key("k", nacl.signing.SigningKey(SEED))
    assert bytes(Keystore(store_path, "second", CHEAP).get_signing_key("k")) == SEED


def test_passphrase_is_unicode_normalized(store_path):
    Keystore(store_path, "caf\u00e9", CHEAP).put_signing_key("k", nacl.signing.SigningKey(SEED))
    assert bytes(Keystore(store_path, "cafe\u0301", CHEAP).get_signing_key("k")) == SEED


def _flip_ciphertext(obj):
    data = bytearray(b64decode(obj["ciphertext"]))
    data[0] ^= 1
    obj["ciphertext"] = b64encode(bytes(data))


def _truncate_ciphertext(obj):
    obj["ciphertext"] = b64encode(b64decode(obj["ciphertext"])[:-1])


def _flip_nonce(obj):
    nonce = bytearray(b64decode(obj["nonce"]))
    nonce[0] ^= 1
    obj["nonce"] = b64encode(bytes(nonce))


@pytest.mark.parametrize("change", [
    _flip_ciphertext,
    _truncate_ciphertext,
    _flip_nonce,
    lambda obj: obj.update(ciphertext=obj["ciphertext"][:8]),
    lambda obj: obj.update(version=2),
    lambda obj: obj.update(version=True),
    lambda obj: obj.update(function="x25519"),
    lambda obj: obj.update(function="rsa"),
    lambda obj: obj.update(extra=1),
    lambda obj: obj.pop("check"),
    lambda obj: obj.update(nonce=obj["nonce"] + "=="),
    lambda obj: obj["kdf"].update(alg="scrypt"),
    lambda obj: obj["kdf"].update(memlimit=2**40),
    lambda obj: obj["kdf"].update(opslimit=0),
    lambda obj: obj["kdf"].update(opslimit=1.0),
    lambda obj: obj["kdf"].update(salt="AAAA"),
], ids=["flip", "cut-ciphertext", "nonce", "short", "version", "bool-version", "function",
        "rsa", "extra", "no-check", "padded-b64", "alg", "memlimit", "opslimit", "float",
        "salt-length"])
def test_tampered_file_is_corrupt(store, change):
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    _edit(store, "sigkey", change)
    with pytest.raises(KeystoreCorrupt):
        store.get_signing_key("sigkey")


@pytest.mark.parametrize("keep", [0, 1, 40, -2])
def test_truncated_file_is_corrupt(store, keep):
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    path = _key_file(store, "sigkey")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:keep])
    with pytest.raises(KeystoreCorrupt):
        store.get_signing_key("sigkey")


def test_oversized_file_is_corrupt(store):
    with open(_key_file(store, "big"), "wb") as f:
        f.write(b" " * 10_000 + b"{}")
    with pytest.raises(KeystoreCorrupt):
        store.get_signing_key("big")


def test_renamed_or_swapped_file_is_corrupt(store):
    store.put_signing_key("sigkey", nacl.signing.SigningKey.generate())
    store.put_signing_key("sigescrow", nacl.signing.SigningKey.generate())
    sigkey, escrow = _key_file(store, "sigkey"), _key_file(store, "sigescrow")
    os.rename(sigkey, sigkey + ".old")
    os.rename(escrow, sigkey)
    os.rename(sigkey + ".old", escrow)
    with pytest.raises(KeystoreCorrupt, match="renamed or swapped"):
        store.get_signing_key("sigkey")


def test_corrupt_file_does_not_block_other_keys(store, store_path):
    store.put_signing_key("a", nacl.signing.SigningKey.generate())
    with open(_key_file(store, "a"), "wb") as f:
        f.write(b"{")
    reopened = Keystore(store_path, PASSPHRASE, CHEAP)
    reopened.put_signing_key("b", nacl.signing.SigningKey(SEED))
    assert bytes(reopened.get_signing_key("b")) == SEED


def test_store_written_with_other_limits_opens(store_path):
    stronger = KdfParams(argon2id.OPSLIMIT_MIN + 1, argon2id.MEMLIMIT_MIN * 2)
    Keystore(store_path, PASSPHRASE, stronger).put_signing_key(
        "old", nacl.signing.SigningKey(SEED))
    store = Keystore(store_path, PASSPHRASE, CHEAP)
    assert bytes(store.get_signing_key("old")) == SEED
    store.put_signing_key("new", nacl.signing.SigningKey.generate())  # new files: new limits
    with open(_key_file(store, "new"), encoding="utf-8") as f:
        assert json.load(f)["kdf"]["opslimit"] == CHEAP.opslimit
    assert store.names() == ["new", "old"]
    assert bytes(Keystore(store_path, PASSPHRASE, stronger).get_signing_key("old")) == SEED


def test_one_kdf_per_salt(store_path, monkeypatch):
    calls = []
    real = keystore.derive_key

    def counting(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(keystore, "derive_key", counting)
    writer = Keystore(store_path, PASSPHRASE, CHEAP)
    for i in range(5):
        writer.put_signing_key(f"k{i}", nacl.signing.SigningKey.generate())
    assert len(calls) == 1
    reader = Keystore(store_path, PASSPHRASE, CHEAP)
    for i in range(5):
        reader.get_signing_key(f"k{i}")
    reader.put_private_key("p", nacl.public.PrivateKey.generate())  # reuses the salt
    assert len(calls) == 2 and calls[0] == calls[1]


def test_default_limits_are_at_least_interactive(store_path):
    assert DEFAULT_KDF.opslimit >= argon2id.OPSLIMIT_INTERACTIVE
    assert DEFAULT_KDF.memlimit >= argon2id.MEMLIMIT_INTERACTIVE
    store = Keystore(store_path, PASSPHRASE)
    assert store.kdf == DEFAULT_KDF
    store.put_signing_key("sigkey", nacl.signing.SigningKey(SEED))
    with open(_key_file(store, "sigkey"), encoding="utf-8") as f:
        kdf = json.load(f)["kdf"]
    assert (kdf["opslimit"], kdf["memlimit"]) == (DEFAULT_KDF.opslimit, DEFAULT_KDF.memlimit)


def test_default_limits_are_read_at_construction(store_path, monkeypatch):
    monkeypatch.setattr(keystore, "DEFAULT_KDF", CHEAP)
    assert Keystore(store_path, PASSPHRASE).kdf == CHEAP


@pytest.mark.parametrize("ops, mem", [
    (0, argon2id.MEMLIMIT_MIN), (1, argon2id.MEMLIMIT_MIN - 1), (1000, argon2id.MEMLIMIT_MIN),
])
def test_kdf_params_out_of_range(ops, mem):
    with pytest.raises(ValueError):
        KdfParams(ops, mem)


# --- Passphrase ----------------------------------------------------------------------

def asked(*answers: str):
    """An ``ask`` giving ``answers`` in turn, and the ``confirm`` of each call."""
    calls: list[bool] = []

    def ask(confirm: bool) -> str:
        calls.append(confirm)
        return answers[len(calls) - 1]

    return ask, calls


def test_passphrase_from_env_is_the_only_try(store, store_path, monkeypatch):
    store.put_signing_key("k", nacl.signing.SigningKey(SEED))
    monkeypatch.setattr(keystore, "DEFAULT_KDF", CHEAP)
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", PASSPHRASE)
    ask, calls = asked()
    opened = open_keystore(store_path, ask, pytest.fail)
    assert bytes(opened.get_signing_key("k")) == SEED and calls == []
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "wrong one")
    with pytest.raises(WrongPassphrase, match=r"^\$KEYCLIENT_PASSPHRASE: wrong passphrase"):
        open_keystore(store_path, ask, pytest.fail)
    assert calls == []


def test_three_tries_saying_why_each_was_refused(store, store_path, monkeypatch):
    store.put_signing_key("k", nacl.signing.SigningKey(SEED))
    monkeypatch.setattr(keystore, "DEFAULT_KDF", CHEAP)
    monkeypatch.delenv("KEYCLIENT_PASSPHRASE", raising=False)
    told: list[str] = []
    ask, calls = asked("", "wrong one", PASSPHRASE)
    assert bytes(open_keystore(store_path, ask, told.append).get_signing_key("k")) == SEED
    assert calls == [False] * 3     # an existing store: typed once each
    assert told == ["the passphrase is empty: try again (2 tries left)",
                    "wrong passphrase: try again (1 try left)"]
    ask, calls = asked("x", "wrong one", "wrong two", PASSPHRASE)
    with pytest.raises(WrongPassphrase, match=r"^wrong passphrase for the keystore .* "
                                              r"\(3 tries\); nothing was changed"):
        open_keystore(store_path, ask, told.append)
    assert len(calls) == 3 and store.names() == ["k"]


def test_a_new_keystore_needs_a_long_enough_passphrase(store_path, monkeypatch):
    monkeypatch.setattr(keystore, "DEFAULT_KDF", CHEAP)
    monkeypatch.delenv("KEYCLIENT_PASSPHRASE", raising=False)
    told: list[str] = []
    ask, calls = asked("1234567", "12345678")
    opened = open_keystore(store_path, ask, told.append)
    assert calls == [True, True]    # a new store: typed twice (click's confirmation)
    assert told == ["a new keystore's passphrase needs at least 8 characters (it alone "
                    "protects your keys on disk): try again (2 tries left)"]
    opened.put_signing_key("k", nacl.signing.SigningKey(SEED))
    # The store is no longer new: the length is not asked of it again (nor of stores
    # made before the rule, whose passphrase may be shorter).
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "12345678")
    assert open_keystore(store_path, pytest.fail, pytest.fail).names() == ["k"]
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "short")
    with pytest.raises(WrongPassphrase, match="at least 8 characters"):
        open_keystore(str(os.path.dirname(store_path)) + "/fresh", pytest.fail, pytest.fail)


def test_a_delete_stopped_halfway_leaves_no_zeros_under_the_name(store, store_path,
                                                                 monkeypatch):
    """A signal between zeroing and unlinking: the name is gone already (renamed
    first), and the next ``open_keystore`` (under the home's lock) removes the rest."""
    store.put_signing_key("k", nacl.signing.SigningKey(SEED))
    store.put_signing_key("other", nacl.signing.SigningKey(bytes(32)))

    def stopped(path):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(os, "unlink", stopped)
        with pytest.raises(KeyboardInterrupt):
            store.delete("k")
    [leftover] = [name for name in os.listdir(store_path) if name.startswith(".")]
    assert leftover.startswith(".k.") and leftover.endswith(".deleted.tmp")
    assert store.names() == ["other"]
    with open(os.path.join(store_path, leftover), "rb") as handle:
        assert set(handle.read()) == {0}
    monkeypatch.setattr(keystore, "DEFAULT_KDF", CHEAP)
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", PASSPHRASE)
    assert open_keystore(store_path, pytest.fail, pytest.fail).names() == ["other"]
    assert sorted(os.listdir(store_path)) == ["other.key"]
