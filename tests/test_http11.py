"""The fetcher's HTTP/1.1 connection against a socket server that sends canned bytes."""

import socket
import threading
import time

import pytest

from client.transport.http11 import (AnswerTooSlow, BodyTooLarge, Connection, HTTPError,
                           RemoteDisconnected)


class CannedServer:
    """Answers each request read on a connection with the next canned bytes, then
    closes the connection if the item says so; records what it received."""

    def __init__(self, *answers: tuple[bytes, bool], tls=None):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.clients: list[Connection] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        if tls is not None:
            self.listener = tls.wrap_socket(self.listener, server_side=True)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                while self.answers:
                    request = self._read_request(reader)
                    if request is None:
                        break
                    self.requests.append(request)
                    answer, close = self.answers.pop(0)
                    self._send(conn, answer)
                    if close:
                        break

    @staticmethod
    def _read_request(reader) -> bytes | None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = reader.readline()
            if not line:
                return None
            head += line
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return head + reader.read(length)

    def _send(self, conn: socket.socket, answer: bytes) -> None:
        conn.sendall(answer)

    def connection(self, scheme: str = "http", timeout: float = 5,
                   deadline: float = 5) -> Connection:
        self.clients.append(Connection(scheme, "127.0.0.1", self.port, timeout, deadline))
        return self.clients[-1]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.listener.close()


@pytest.fixture
def serve():
    servers = []

    def start(*answers):
        servers.append(CannedServer(*answers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def get(connection, limit=1000, error_limit=100):
    return connection.request("GET", "/x", {}, None, limit, error_limit)


def test_content_length_answers_reuse_the_connection(serve):
    server = serve((ok(b"one", b"X-A: 1\r\nx-a: 2\r\n"), False), (ok(b"two"), False))
    connection = server.connection()
    status, headers, body = get(connection)
    assert (status, body, headers["x-a"]) == (200, b"one", "1, 2")
    assert get(connection)[2] == b"two" and connection.open
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                         % server.port)


def test_the_request_body_is_sent_with_its_length(serve):
    server = serve((ok(b""), False), (ok(b""), False))
    connection = server.connection()
    connection.request("PUT", "/u", {"Content-Type": "application/json"}, b'{"a":1}', 10, 10)
    connection.request("POST", "/p", {}, None, 10, 10)
    assert server.requests[0].endswith(b"Content-Type: application/json\r\n"
                                       b"Content-Length: 7\r\n\r\n{\"a\":1}")
    assert server.requests[1].endswith(b"Content-Length: 0\r\n\r\n")


def test_a_chunked_answer_with_extensions_and_trailers(serve):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4;name=value\r\nabcd\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n")
    server = serve((chunked, False), (ok(b"next"), False))
    connection = server.connection()
    assert get(connection)[2] == b"abcd0123456789"
    assert get(connection)[2] == b"next" and server.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\n\r\nuntil the end",                               # close-delimited
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 13\r\n\r\nuntil the end",
    b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nuntil the end",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"D\r\nuntil the end\r\n0\r\n\r\n",                                  # both: chunks win
])
def test_answers_that_end_the_connection_close_it(serve, answer):
    server = serve((answer, True), (ok(b"again"), False))
    connection = server.connection()
    assert get(connection)[2] == b"until the end"
    assert not connection.open
    assert get(connection)[2] == b"again" and server.connections == 2


def test_interim_answers_are_skipped(serve):
    server = serve((b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"real"), False))
    assert get(server.connection())[:3:2] == (200, b"real")


def test_bodiless_statuses_have_no_body(serve):
    server = serve((b"HTTP/1.1 204 No Content\r\n\r\n", False), (ok(b"after"), False))
    connection = server.connection()
    assert get(connection)[0::2] == (204, b"")
    assert get(connection)[2] == b"after"


@pytest.mark.parametrize("answer", [
    ok(b"x" * 11),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nxxxxxx\r\n6\r\nxxxxxx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11,
])
def test_a_body_over_the_limit_is_refused(serve, answer):
    server = serve((answer, True))
    connection = server.connection()
    with pytest.raises(BodyTooLarge, match="exceeds 10"):
        get(connection, limit=10)
    assert not connection.open


def test_error_answers_have_their_own_limit(serve):
    server = serve((b"HTTP/1.1 400 Bad\r\nContent-Length: 50\r\n\r\n" + b"e" * 50, False),
                   (b"HTTP/1.1 400 Bad\r\nContent-Length: 500\r\n\r\n" + b"e" * 500, True))
    connection = server.connection()
    assert get(connection, limit=10, error_limit=100)[0::2] == (400, b"e" * 50)
    with pytest.raises(BodyTooLarge):
        get(connection, limit=1000, error_limit=100)


@pytest.mark.parametrize("head", [b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.test/\r\n",
                                  b"HTTP/1.1 101 Switching Protocols\r\n"])
def test_answers_outside_2xx_have_the_error_limit(serve, head):
    """A redirect or a final 1xx is an error to the caller, so its body gets the error
    limit, not the (larger) one of the answer asked for."""
    server = serve((head + b"Content-Length: 50\r\n\r\n" + b"r" * 50, False),
                   (head + b"Content-Length: 500\r\n\r\n" + b"r" * 500, True))
    connection = server.connection()
    assert get(connection, limit=10, error_limit=100)[2] == b"r" * 50
    with pytest.raises(BodyTooLarge):
        get(connection, limit=1000, error_limit=100)


@pytest.mark.parametrize("answer, error", [
    (b"SPDY/3 200 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "ended after 5 of 9"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
     "chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc", "truncated"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "more than 100"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1", "ended in the answer's header"),
])
def test_malformed_answers_are_errors_and_close_the_connection(serve, answer, error):
    server = serve((answer, True))
    connection = server.connection()
    with pytest.raises(HTTPError, match=error):
        get(connection)
    assert not connection.open


def test_no_answer_at_all_is_remote_disconnected(serve):
    server = serve((b"", True))
    with pytest.raises(RemoteDisconnected):
        get(server.connection())


def test_line_breaks_cannot_smuggle_headers(serve):
    connection = Connection("http", "127.0.0.1", 9, timeout=1, deadline=1)
    for headers, target in [({"X": "a\r\nEvil: 1"}, "/x"), ({"X\n": "a"}, "/x"),
                            ({}, "/x HTTP/1.1\r\nEvil: 1")]:
        with pytest.raises(HTTPError, match="line break"):
            connection.request("GET", target, headers, None, 10, 10)
    assert not connection.open            # refused before connecting


def test_host_header_names_non_default_ports_and_brackets_ipv6():
    assert Connection("http", "ks.example", 80, 1, 1).host_header == "ks.example"
    assert Connection("https", "ks.example", 443, 1, 1).host_header == "ks.example"
    assert Connection("http", "ks.example", 8080, 1, 1).host_header == "ks.example:8080"
    assert Connection("http", "::1", 8080, 1, 1).host_header == "[::1]:8080"


# --- slow servers ------------------------------------------------------------------

class DrippingServer(CannedServer):
    """Sends ``fast`` at once, then ``slow`` a byte every ``interval`` seconds (each
    read of the client is quick, the answer is not), until the client hangs up."""

    def __init__(self, fast: bytes, slow: bytes, interval: float):
        self.fast_length, self.interval = len(fast), interval
        super().__init__((fast + slow, True))

    def _send(self, conn: socket.socket, answer: bytes) -> None:
        try:
            conn.sendall(answer[:self.fast_length])
            for byte in answer[self.fast_length:]:
                time.sleep(self.interval)
                conn.sendall(bytes([byte]))
        except OSError:
            pass                                     # the client gave up


@pytest.fixture
def drip():
    servers = []

    def start(fast, slow, interval=0.02):
        servers.append(DrippingServer(fast, slow, interval))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("fast, slow", [
    (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"y" * 100 + b"\r\nContent-Length: 0\r\n\r\n"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"x" * 100),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n",
     b"x" * 100 + b"\r\n0\r\n\r\n"),
    (b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 100),                               # close-delimited
], ids=["header", "content-length", "chunked", "close-delimited"])
def test_an_answer_dripping_past_the_deadline_is_cut_off(drip, fast, slow):
    """About 2 s of bytes 0.02 s apart: no read times out, the deadline does."""
    connection = drip(fast, slow).connection(timeout=1, deadline=0.3)
    started = time.monotonic()
    with pytest.raises(AnswerTooSlow, match="took more than 0.3 s") as caught:
        get(connection, limit=1000)
    assert time.monotonic() - started < 1
    assert isinstance(caught.value, TimeoutError) and not connection.open


def test_a_silent_server_still_times_out_at_the_first_quiet_read(drip):
    connection = drip(b"HTTP/1.1 200 OK\r\n", b"\r\n", interval=1).connection(
        timeout=0.2, deadline=5)
    with pytest.raises(TimeoutError) as caught:
        get(connection)
    assert not isinstance(caught.value, AnswerTooSlow) and not connection.open


def test_each_answer_on_a_connection_has_its_own_deadline(serve):
    server = serve((ok(b"one"), False), (ok(b"two"), False))
    connection = server.connection(deadline=0.3)
    assert get(connection)[2] == b"one"
    time.sleep(0.4)
    assert get(connection)[2] == b"two" and server.connections == 1


# --- https ---------------------------------------------------------------------------

def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyserver test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path):
    """A CannedServer behind TLS with a self-signed certificate for 127.0.0.1."""
    import ssl

    cert_path, key_path = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = CannedServer((ok(b"secret"), False), tls=context)
    yield server, cert_path
    server.close()


def test_https_verifies_the_server_certificate(tls_server, monkeypatch):
    server, cert_path = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))     # the operator's CA
    assert get(server.connection("https"))[0::2] == (200, b"secret")


def test_https_refuses_an_untrusted_certificate(tls_server, monkeypatch, tmp_path):
    import ssl

    server, _ = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        get(server.connection("https"))


def test_a_connection_dropped_while_open_closes_its_socket(serve):
    """As the keep-alive connection of a finished worker thread is dropped."""
    import gc

    server = serve((ok(b"kept alive"), False))
    connection = Connection("http", "127.0.0.1", server.port, timeout=5, deadline=5)
    get(connection)
    sock = connection._sock
    assert connection.open and sock.fileno() >= 0
    del connection
    gc.collect()
    assert sock.fileno() == -1
