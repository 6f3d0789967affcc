"""The import rules of the architecture (docs/architecture.md), checked on the source.

* ``client.protocol`` is pure: it imports only itself, the standard library's
  computing modules and the crypto/encoding libraries; it never reads the clock,
  opens a file or a socket, or runs a process.
* ``keyserver`` imports ``client.protocol`` and nothing else of ``client``.
* ``client`` never imports ``keyserver`` or Flask.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "client" / "protocol"

#: What ``client.protocol`` may import besides itself.
PROTOCOL_ALLOWED = {
    "__future__", "base64", "binascii", "collections", "dataclasses", "datetime", "enum",
    "functools", "hashlib", "hmac", "ipaddress", "itertools", "json", "math", "os", "random",
    "re", "secrets", "string", "struct", "typing", "_sha2", "_sha256", "_sha512",
    "nacl", "cryptography", "msgpack", "gmpy2",
}
#: Attribute uses that read the clock or do I/O, by module.
FORBIDDEN_ATTRIBUTES = {
    "time": None,                       # every use of the time module
    "datetime": {"now", "utcnow", "today"},
    "date": {"today"},
    "os": None,                         # all but the allowed below
    "random": {"seed", "random", "randint", "choice", "shuffle", "uniform"},
}
OS_ALLOWED = {"urandom"}
FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}


def modules(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if ".venv" not in path.parts)


def imported_names(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(root).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                module = f"{base}.{module}" if module else base
                if node.module is None:
                    names += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
                    continue
            names.append((node.lineno, module))
    return names


def protocol_violations(path: Path, root: Path = ROOT) -> list[str]:
    """What in ``path`` breaks the purity of ``client.protocol``."""
    found = []
    for line, name in imported_names(path, root):
        allowed = (name.startswith("client.protocol") if name.startswith("client.")
                   else name.split(".")[0] in PROTOCOL_ALLOWED)
        if not allowed:
            found.append(f"{path.name}:{line} imports {name}")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module, attribute = node.value.id, node.attr
            forbidden = FORBIDDEN_ATTRIBUTES.get(module, set())
            if module == "os" and attribute in OS_ALLOWED:
                continue
            if forbidden is None or attribute in forbidden:
                found.append(f"{path.name}:{node.lineno} uses {module}.{attribute}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in FORBIDDEN_CALLS:
            found.append(f"{path.name}:{node.lineno} calls {node.func.id}()")
    return sorted(found, key=lambda text: int(text.split(":")[1].split()[0]))


@pytest.mark.parametrize("path", modules(PROTOCOL), ids=lambda p: p.name)
def test_protocol_is_pure(path):
    assert protocol_violations(path) == []


def foreign_imports(path: Path, forbidden, root: Path = ROOT) -> list[str]:
    return [f"{path.name}:{line} imports {name}" for line, name in imported_names(path, root)
            if forbidden(name)]


def client_application(name: str) -> bool:
    return (name == "client" or name.startswith("client.")) \
        and not name.startswith("client.protocol")


@pytest.mark.parametrize("path", modules(ROOT / "keyserver"), ids=lambda p: p.name)
def test_server_imports_only_the_protocol_of_the_client(path):
    assert foreign_imports(path, client_application) == []


def server_or_flask(name: str) -> bool:
    return name.split(".")[0] in {"keyserver", "flask", "werkzeug"}


@pytest.mark.parametrize("path", modules(ROOT / "client"), ids=lambda p: p.name)
def test_client_never_imports_the_server_or_flask(path):
    assert foreign_imports(path, server_or_flask) == []


def test_the_rules_see_what_they_forbid(tmp_path):
    """Each rule finds a planted violation, so the checks above are not vacuous."""
    protocol = tmp_path / "client" / "protocol"
    protocol.mkdir(parents=True)
    bad = protocol / "bad.py"
    bad.write_text("import time\nimport os\nfrom .. import accounts\nfrom ..lookup import x\n"
                   "from flask import g\nfrom keyserver import create_app\n"
                   "x = time.time()\nos.listdir('.')\nos.urandom(8)\nopen('f')\n")
    assert protocol_violations(bad, tmp_path) == [
        "bad.py:1 imports time", "bad.py:3 imports client.accounts", "bad.py:4 imports client.lookup",
        "bad.py:5 imports flask", "bad.py:6 imports keyserver",
        "bad.py:7 uses time.time", "bad.py:8 uses os.listdir", "bad.py:10 calls open()"]
    assert foreign_imports(bad, client_application, tmp_path) == [
        "bad.py:3 imports client.accounts", "bad.py:4 imports client.lookup"]
    assert foreign_imports(bad, server_or_flask, tmp_path) == [
        "bad.py:5 imports flask", "bad.py:6 imports keyserver"]
