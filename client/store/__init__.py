"""The client's state at rest, in its home folder: ``home`` (the state database,
one schema with migrations), ``localchain`` (the verified entries of each chain),
``search`` (the identity search over them and its k1 cache and index), ``wallet``
(tokens), ``keystore`` (private keys) and ``paper`` (the escrow key's paper
backup)."""
