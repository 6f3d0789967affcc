"""Moving bytes (STYLE "Target architecture"): ``http11`` speaks HTTP/1.1,
``fetcher`` turns every foreign failure into ``TransportError`` and error answers
into the errcode's ``ProtocolError``, ``api`` names the §12 operations and parses
each answer once into its ``protocol.wire`` object. Nothing here decides what to
trust."""
