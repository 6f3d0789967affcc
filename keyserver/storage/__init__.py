"""The server's storage layer: SQL (and the secret files) only, no rules and no Flask
views. Every function that writes runs inside the caller's write transaction
(``db.transaction`` or one job of ``db.write``); uniqueness is decided by
constraints and conditional statements, never by checking first (§5, §6, §7, §9, §10)."""
