"""What the client trusts (§7.3, §7.5, §11.3), decided without any I/O:
``chainstate`` (the verified chain prefix), ``keyring`` (the server's signing keys
as the chain records them, and whose signature counts when), ``history`` (an
identity's verified sequence of messages). Every check raises
``VerificationError``; nothing here fetches or stores."""
