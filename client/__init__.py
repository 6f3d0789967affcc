"""Client library of the hashchain keyserver protocol (``../shared/spec/PROTOCOL.md``).

``protocol`` is the pure protocol library, shared with the server (which imports
nothing else of ``client``); around it the application: ``transport`` moves and
parses bytes, ``trust`` decides what to believe, ``store`` keeps the home's state,
``session`` runs fetch -> verify -> persist for one server, and ``accounts``,
``keyinits``, ``lookup`` and ``cli`` are the user's actions. This package never
imports the server.
"""
