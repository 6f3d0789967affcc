"""Checking the configuration once, when the app is made.

Values come from ``<instance>/config.py`` and from ``KEYSERVER_*`` variables,
which Flask parses as JSON when they are JSON and keeps as strings otherwise. A
wrong value must stop the server at its start with a message naming the key:
found later it is a 500 on every request, or worse, quietly something else
(``LOOKUP_ENABLED=False`` is the string "False", which Python takes as true;
``RESERVED_LOCALPARTS=x`` the set of its characters).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Mapping

from client.protocol.errors import InvalidIdentity
from client.protocol.identity import check_server_name, is_domain
from client.protocol.note import ALG_COSIGNATURE, parse_verifier_key
from client.protocol.urls import URLError, split_url

from .service.payment import OPERATIONS

#: Switches, as Python or JSON values, or as these words (any case) in a variable.
_BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "on": True,
                  "false": False, "0": False, "no": False, "off": False}
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: The smallest body limit that still takes a UIDMessage and a KeyInit batch.
MIN_REQUEST_BYTES = 16 * 1024

#: key -> smallest allowed integer.
_COUNTS = {
    "MAX_REQUEST_BYTES": MIN_REQUEST_BYTES, "DEFAULT_CHUNK": 1, "MAX_CHUNK": 1,
    "MAX_UID_LIFETIME": 1, "RECLAIM_GRACE": 0, "LASTENTRY_MAX_AGE": 1,
    "MAX_KEYINIT_LIFETIME": 1, "MAX_KEYINITS_PER_IDENTITY": 1, "MAX_KEYINITS_PER_REQUEST": 1,
    "KEYINIT_FETCH_RATE_PER_ADDRESS": 0, "KEYINIT_FETCH_RATE_PER_SIGKEYHASH": 0,
    "TOKEN_KEY_LIFETIME": 1, "MAX_TOKENS_PER_ISSUE": 1,
    "KEY_VALIDITY": 3600 * 1000, "KEY_ROTATION_OVERLAP": 0, "WORKER_INTERVAL": 1,
    "OWN_RENEWAL_MARGIN": 0, "CHECKPOINT_INTERVAL": 1, "REQUEST_WAIT_BOUND": 100,
    "MIN_FREE_BYTES": 0, "DISK_CHECK_INTERVAL": 0, "NOTARY_MIN_REFETCH": 0,
    "NOTARY_FETCH_TIMEOUT": 1, "NOTARY_MAX_DOCUMENT_BYTES": 1024,
    "WITNESS_TIMEOUT": 1, "WITNESS_RETRY_MIN": 1, "WITNESS_RETRY_MAX": 1,
}


class ConfigError(ValueError):
    """The configuration holds a value the server cannot run with."""


def check_config(config: dict[str, Any]) -> None:
    """Raise ``ConfigError`` for the first bad value; normalize switches to bools, the
    SQLite level to upper case and the default chunk to at most the largest, as the
    code that reads them expects."""
    for key, minimum in _COUNTS.items():
        value = config[key]
        if type(value) is not int or value < minimum:
            raise ConfigError(f"{key} must be an integer of at least {minimum}, not {value!r}")
    # A smaller MAX_CHUNK alone also bounds the default chunk.
    config["DEFAULT_CHUNK"] = min(config["DEFAULT_CHUNK"], config["MAX_CHUNK"])
    for key in ("LOOKUP_ENABLED", "METRICS_ENABLED", "REQUEST_LOG"):
        config[key] = _switch(key, config[key])
    level = config["SQLITE_SYNCHRONOUS"]
    if not isinstance(level, str) or level.upper() not in SYNCHRONOUS_LEVELS:
        raise ConfigError(f"SQLITE_SYNCHRONOUS must be one of {', '.join(SYNCHRONOUS_LEVELS)},"
                          f" not {level!r}")
    config["SQLITE_SYNCHRONOUS"] = level.upper()
    try:
        check_server_name(config["KEYSERVER_NAME"])
    except InvalidIdentity as exc:
        raise ConfigError(f"KEYSERVER_NAME: {exc}") from None
    _check_url("BASE_URL", config["BASE_URL"])
    domains = _strings("DOMAINS", config["DOMAINS"], is_domain, "lowercase DNS names")
    if not domains:
        raise ConfigError("DOMAINS must name at least one domain")
    _strings("RESERVED_LOCALPARTS", config["RESERVED_LOCALPARTS"])
    _strings("ALLOWED_MIXADDRESSES", config["ALLOWED_MIXADDRESSES"])
    _strings("TRUSTED_PROXIES", config["TRUSTED_PROXIES"], _is_network,
             "IP addresses or networks")
    if config["TILES_URL"] != "":
        _check_url("TILES_URL", config["TILES_URL"])
    for key in ("KEYINIT_REPOSITORY_URIS", "ALLOWED_REPOURIS"):
        for uri in _strings(key, config[key]):
            _check_url(key, uri)
    for key in ("DATABASE", "SIGNING_KEY_FILE", "WITNESS_KEY_FILE"):
        # A name in the instance folder: backups copy the folder, and a restore
        # replaces the witness key by name (keyserver/backup.py).
        value = config[key]
        if not isinstance(value, str) or value in ("", ".", "..") \
                or os.path.basename(value) != value:
            raise ConfigError(f"{key} must be a file name in the instance folder, "
                              f"not {value!r}")
    _check_prices(config["TOKEN_PRICES"])
    _check_origins(config["NOTARY_ORIGINS"])
    _check_witness_logs(config["WITNESS_LOGS"])
    _check_witnesses(config["WITNESSES"])
    if config["WITNESS_RETRY_MAX"] < config["WITNESS_RETRY_MIN"]:
        raise ConfigError("WITNESS_RETRY_MAX must be at least WITNESS_RETRY_MIN")


def _switch(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS:
        return _BOOLEAN_WORDS[value.strip().lower()]
    raise ConfigError(f"{key} must be true or false, not {value!r}")


def _strings(key: str, value: Any, valid: Callable[[str], bool] = lambda s: True,
             what: str = "strings") -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(item, str) and valid(item) for item in value):
        raise ConfigError(f"{key} must be a list of {what}, not {value!r}")
    return list(value)


def _is_network(value: str) -> bool:
    from .http.proxies import parse_networks

    try:
        parse_networks([value])
    except ValueError:
        return False
    return True


def _check_url(key: str, value: Any) -> None:
    if isinstance(value, str):
        with contextlib.suppress(URLError):
            split_url(value)
            return
    raise ConfigError(f"{key} must be an http or https URL, not {value!r}")


def _check_origins(origins: Any) -> None:
    # §11.4: server name -> base URL of its key document, or None for https://<name>.
    if not isinstance(origins, Mapping):
        raise ConfigError("NOTARY_ORIGINS must map server names to base URLs (or null),"
                          f" not {origins!r}")
    for name, url in origins.items():
        try:
            check_server_name(name)
        except (InvalidIdentity, TypeError) as exc:
            raise ConfigError(f"NOTARY_ORIGINS: {exc}") from None
        if url is not None:
            _check_url(f"NOTARY_ORIGINS[{name!r}]", url)


def _check_witnesses(witnesses: Any) -> None:
    # §8.1: witness name -> {"url": submission prefix, "vkey": its cosignature key}.
    if not isinstance(witnesses, Mapping):
        raise ConfigError('WITNESSES must map witness names to {"url": ..., "vkey": ...},'
                          f" not {witnesses!r}")
    for name, witness in witnesses.items():
        where = f"WITNESSES[{name!r}]"
        if not isinstance(witness, Mapping) or sorted(witness) != ["url", "vkey"]:
            raise ConfigError(f'{where} must be {{"url": ..., "vkey": ...}}, not {witness!r}')
        _check_url(f"{where}.url", witness["url"])
        vkey = parse_verifier_key(witness["vkey"], f"{where}.vkey", ConfigError,
                                  ALG_COSIGNATURE)
        if vkey.name != name:
            raise ConfigError(f"{where}.vkey is the key of {vkey.name!r}, not of {name!r}")


def _check_witness_logs(logs: Any) -> None:
    # §8.1: origin -> the log's verifier keys (policy.from_config parses them again).
    if not isinstance(logs, Mapping):
        raise ConfigError("WITNESS_LOGS must map log origins to lists of verifier keys,"
                          f" not {logs!r}")
    for origin, keys in logs.items():
        if not isinstance(origin, str) or not origin or "\n" in origin:
            raise ConfigError(f"WITNESS_LOGS: {origin!r} is not a log origin (one line)")
        if not isinstance(keys, (list, tuple)) or not keys:
            raise ConfigError(f"WITNESS_LOGS[{origin!r}] must be a non-empty list of the"
                              f" log's verifier keys, not {keys!r}")
        for key in keys:
            parse_verifier_key(key, f"WITNESS_LOGS[{origin!r}]", ConfigError)


def _check_prices(prices: Any) -> None:
    # §10: an operation costs one token or nothing.
    if not isinstance(prices, Mapping) or sorted(prices) != sorted(OPERATIONS) or any(
            type(price) is not int or price not in (0, 1) for price in prices.values()):
        raise ConfigError("TOKEN_PRICES must give each of " + ", ".join(OPERATIONS)
                          + f" a price of 0 or 1 tokens, not {prices!r}")
