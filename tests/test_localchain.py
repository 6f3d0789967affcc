"""The client's local chain at rest (§7.5): only what was recorded as verified
survives a crash."""

from client.protocol.hashchain import ENTRY_SIZE
from client.session import sync_chain
from client.store.localchain import LocalChain
from client.transport.api import KeyserverAPI


def test_crash_leftovers_are_truncated(app_server, state, tmp_path):
    app_server.load_chain(5)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    sync_chain(KeyserverAPI(app_server.url), chain)
    with open(chain.entries_path, "ab") as handle:
        handle.write(b"x" * 200)   # written, never recorded as verified
    reopened = LocalChain(state, str(tmp_path / "c"), "example.org")
    assert len(reopened.read()) == 6 * ENTRY_SIZE
    with open(reopened.entries_path, "rb") as handle:
        assert len(handle.read()) == 6 * ENTRY_SIZE
