"""Client library of the hashchain keyserver protocol (``../shared/spec/PROTOCOL.md``).

The protocol modules here (encoding, identities, signed JSON, the hashchain,
UIDMessages) are shared with the server, which imports them; this package
never imports the server.
"""
