# Example production configuration: copy to <instance>/config.py (keyserver init writes
# the first three keys for you). Every key can also be set as KEYSERVER_<KEY> in the
# environment (JSON values, e.g. KEYSERVER_DOMAINS='["example.org"]').
KEYSERVER_NAME = "keys.example.org"
BASE_URL = "https://keys.example.org"
DOMAINS = ["example.org"]
# KeyInit repositories of other operators that identities here may list (§9).
# ALLOWED_REPOURIS = ["https://keyinits.example.net"]

# Defaults shown; durations are milliseconds.
# MAX_CHUNK = 10000
# MAX_REQUEST_BYTES = 262144
# MAX_UID_LIFETIME = 365 * 24 * 3600 * 1000
# RECLAIM_GRACE = 365 * 24 * 3600 * 1000
# LASTENTRY_MAX_AGE = 24 * 3600 * 1000
# SQLITE_SYNCHRONOUS = "FULL"
