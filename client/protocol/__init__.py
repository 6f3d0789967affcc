"""The pure protocol library (``../shared/spec/PROTOCOL.md``), shared by the client
application around it and by the server, which imports nothing else of ``client``.

No I/O, no clock, no Flask: every module here turns bytes and parsed values (and an
explicit ``now_ms`` where a rule needs the time) into results or typed errors. One
module per spec concept: ``encoding``, ``identity``, ``keys``, ``signedjson`` and
``errors`` (§1-3, §12), ``hashchain`` (§7), ``uidmessage`` and ``uidrules`` (§4, §5),
``keyinit`` (§9), ``tokens`` (§10), ``urls`` (the URLs servers publish).
"""
