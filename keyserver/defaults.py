"""Default configuration. ``<instance>/config.py`` overrides it, ``KEYSERVER_<KEY>``
environment variables override both (values parsed as JSON when they are JSON).

Durations are integer milliseconds, like every time in the protocol.
"""

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS

#: The server's DNS name (no port); its own identity is keyserver@KEYSERVER_NAME.
#: Not Flask's SERVER_NAME, which would change how Flask routes requests.
KEYSERVER_NAME = "localhost"
#: Public base URL of this server, as clients reach it.
BASE_URL = "http://127.0.0.1:5000"
#: Domains whose identities this server registers.
DOMAINS = ["localhost"]
#: Localparts nobody may register (§2).
RESERVED_LOCALPARTS = [
    "keyserver", "root", "admin", "administrator", "postmaster", "hostmaster",
    "webmaster", "abuse", "security", "support", "noreply",
]
#: Non-empty mixaddress values a UIDMessage may carry (§4.1); empty: none allowed.
ALLOWED_MIXADDRESSES: list = []
#: URIs of this server's KeyInit repository (§9); empty means [BASE_URL].
KEYINIT_REPOSITORY_URIS: list = []
#: KeyInit repositories of other operators that this server vouches for (§9): UIDMessages
#: may name them beside KEYINIT_REPOSITORY_URIS, and capabilities list both.
ALLOWED_REPOURIS: list = []

#: Where the log's tiles are served (§8, capabilities' ``tiles_url``): empty means
#: this server (BASE_URL); else the base URL of a static copy (``keyserver tiles export``).
TILES_URL = ""

#: Paths inside the instance folder unless absolute.
DATABASE = "keyserver.sqlite"
SIGNING_KEY_FILE = "signing.key"
#: The log key (§8): a separate, long-lived key for checkpoints, bound on the chain.
LOG_KEY_FILE = "log.key"
#: The witness key (§8.1): a separate Ed25519 key that cosigns other logs' checkpoints
#: (made by ``init``; made when missing in an instance older than witnesses).
WITNESS_KEY_FILE = "witness.key"
#: SQLite ``synchronous`` level: FULL makes every commit durable (fsync).
SQLITE_SYNCHRONOUS = "FULL"

#: The longest a request waits for the database (the write lock, SQLite's busy handler,
#: this process's queue of writers) before it is answered 503 UNAVAILABLE with
#: Retry-After: well below gunicorn's --timeout (30 s), so every request gets an answer.
REQUEST_WAIT_BOUND = 10 * 1000
#: Free bytes the database's file system keeps: below, writes are refused (503) while
#: reads go on, so the database never runs into a full disk. 0 turns the check off.
MIN_FREE_BYTES = 64 * 1024 * 1024
#: How often (at most) each process measures the free space (os.statvfs).
DISK_CHECK_INTERVAL = 1000
#: Whether GET /metrics answers (Prometheus text format). Off by default: expose it
#: only where your scraper reaches it (see README, Production).
METRICS_ENABLED = False
#: Whether every request is logged as one line (request id, endpoint, status, time;
#: never a path, a token, a voucher code or an identity).
REQUEST_LOG = True

#: Largest request body accepted (413 TOO_LARGE above it).
MAX_REQUEST_BYTES = 256 * 1024
#: Hashchain chunk sizes (§12).
DEFAULT_CHUNK = 1000
MAX_CHUNK = 10000

#: How long a served key document is valid (§11.1; at least an hour).
KEY_VALIDITY = 24 * HOUR_MS
#: How long the previous signing key stays current after a rotation (§11.2).
KEY_ROTATION_OVERLAP = HOUR_MS
#: How often ``keyserver worker`` runs the server's periodic duties (§11.2).
WORKER_INTERVAL = HOUR_MS
#: The worker signs a checkpoint at most this often, when the chain grew (§8).
CHECKPOINT_INTERVAL = 10 * 1000
#: The server renews its own UIDMessage once less than this is left (§11.2).
OWN_RENEWAL_MARGIN = 30 * DAY_MS

#: The notary (§11.4): the servers whose key documents this server fetches, caches and
#: countersigns, as server name -> base URL of the origin (None: https://<name>). It
#: answers for these and for itself only: a notary that fetched any name asked of it
#: would make requests anywhere for anyone (docs/decisions.md).
NOTARY_ORIGINS: dict = {}
#: One origin is asked at most once in this time, however often clients ask (§11.4).
NOTARY_MIN_REFETCH = 60 * 1000
#: How long one request may spend asking origins, in all: connecting, sending, the answer.
NOTARY_FETCH_TIMEOUT = 3 * 1000
#: The largest key document accepted from an origin (a Matrix homeserver's is under 1 KiB).
NOTARY_MAX_DOCUMENT_BYTES = 64 * 1024

#: The witness (§8.1): the logs whose checkpoints this server cosigns at
#: POST /witness/add-checkpoint, as origin -> list of the log's verifier keys in Go's note
#: format (``<name>+<hex key_hash>+<b64(0x01 || pubkey)>``; a keyserver's is ``log_vkey``
#: in its capabilities). Empty: the server witnesses nothing (the endpoint answers 404).
WITNESS_LOGS: dict = {}
#: The witnesses this log asks to cosign each new checkpoint (§8.1), as witness name ->
#: {"url": its submission prefix (the request goes to <url>/add-checkpoint, e.g.
#: "https://keys.example.net/witness"), "vkey": its verifier key
#: "<name>+<hex key_id>+<b64(0x04 || pubkey)>", whose name is the witness's}.
WITNESSES: dict = {}
#: How long one request to a witness may take, in all.
WITNESS_TIMEOUT = 5 * 1000
#: After a witness failed, the next attempt waits WITNESS_RETRY_MIN, doubling with each
#: failure in a row up to WITNESS_RETRY_MAX.
WITNESS_RETRY_MIN = 10 * 1000
WITNESS_RETRY_MAX = HOUR_MS

MAX_UID_LIFETIME = 365 * DAY_MS
RECLAIM_GRACE = 365 * DAY_MS
LASTENTRY_MAX_AGE = 24 * HOUR_MS
MAX_KEYINIT_LIFETIME = 30 * DAY_MS
MAX_KEYINITS_PER_IDENTITY = 100
MAX_KEYINITS_PER_REQUEST = 50
#: KeyInit fetches a minute (0: unlimited), per client address and per sigkeyhash (§9),
#: counted in the database, so shared by every worker (docs/decisions.md says why these).
KEYINIT_FETCH_RATE_PER_ADDRESS = 60
KEYINIT_FETCH_RATE_PER_SIGKEYHASH = 30
#: Reverse proxies (addresses or networks, e.g. ["127.0.0.1"]) whose X-Forwarded-For
#: gives the client's address for per-address limits; empty: the TCP peer's address is
#: the client's, and X-Forwarded-For is ignored (see keyserver/http/proxies.py).
TRUSTED_PROXIES: list = []

#: Tokens charged per operation (0 or 1, §10).
TOKEN_PRICES = {"create_uid": 1, "update_uid": 1, "add_keyinit": 1}
#: How long a token key verifies tokens (rotate well before; tokens die with their key).
TOKEN_KEY_LIFETIME = 365 * DAY_MS
#: Most blind signatures one voucher request may ask for.
MAX_TOKENS_PER_ISSUE = 100
#: Whether GET /v1/users/<identity> answers (it reveals who is looked up).
LOOKUP_ENABLED = True
