"""The health prober (aiohttp under the egress policy) against raw loopback servers that script every byte."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from registry import egress, health, health_loop, prober
from registry.models import HealthSnapshot

JSON_OK = b'{"status": "healthy"}'


def _ok(body: bytes = JSON_OK, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


class RawServer:
    """Accepts connections; ``script(n, request_head)`` returns (bytes to send, close afterwards).

    ``n`` counts requests over the server's life (1-based). Every request head is kept,
    and every accepted connection counted, so tests can assert on reuse.
    """

    def __init__(self, script: Callable[[int, bytes], tuple[bytes, bool]], *, tls: ssl.SSLContext | None = None):
        self.script, self.tls = script, tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0  # connections this server has closed
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/health", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                with self._lock:
                    self.requests.append(head)
                    n = len(self.requests)
                payload, close = self.script(n, head)
                if callable(payload):
                    payload(conn)
                else:
                    conn.sendall(payload)
                if close:
                    return
        except OSError:
            return
        finally:
            conn.close()
            with self._lock:
                self.closed += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def probe():
    p = prober.Prober()
    yield p
    p.close()


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def make(script, **kw) -> RawServer:
        servers.append(RawServer(script, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def get(probe: prober.Prober, url: str, **kw) -> prober.Response:
    return probe.run(probe.get(url, **kw), timeout=10)


def test_keep_alive_connections_are_reused(probe, raw):
    server = raw(lambda n, head: (_ok(), False))
    for _ in range(3):
        response = get(probe, server.url())
        assert (response.status, response.body) == (200, JSON_OK)
    assert server.connections == 1 and len(server.requests) == 3


def test_the_request_names_host_port_and_a_requoted_path(probe, raw):
    server = raw(lambda n, head: (_ok(), False))
    get(probe, f"http://127.0.0.1:{server.port}/health check?x=1")
    head = server.requests[0].decode()
    assert head.startswith("GET /health%20check?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}" in head
    assert "Authorization" not in head


def test_credentials_in_a_url_are_refused_and_never_sent(probe, raw):
    server = raw(lambda n, head: (_ok(), False))
    with pytest.raises(egress.EgressDenied, match="credentials"):
        get(probe, f"http://ops:s%40cret@127.0.0.1:{server.port}/health")
    assert server.requests == []


def test_chunked_bodies_with_extensions_and_trailers(probe, raw):
    body = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"a;ext=1\r\n{\"status\":\r\nb\r\n \"healthy\"}\r\n0\r\nX-Trailer: y\r\n\r\n")
    server = raw(lambda n, head: (body, False))
    assert get(probe, server.url()).body == b'{"status": "healthy"}'
    assert get(probe, server.url()).body == b'{"status": "healthy"}'
    assert server.connections == 1  # the chunked body was read to its end: socket reused


def test_http_1_0_bodies_delimited_by_close(probe, raw):
    server = raw(lambda n, head: (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + JSON_OK, True))
    assert get(probe, server.url()).body == JSON_OK
    assert get(probe, server.url()).body == JSON_OK
    assert server.connections == 2


def test_interim_1xx_responses_are_skipped(probe, raw):
    server = raw(lambda n, head: (b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(), False))
    response = get(probe, server.url())
    assert (response.status, response.body) == (200, JSON_OK)


def test_redirects_are_never_followed(probe, raw):
    def script(n, head):
        return b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/secret\r\nContent-Length: 0\r\n\r\n", False

    server = raw(script)
    response = get(probe, server.url("/old"))
    assert (response.status, response.location) == (302, "http://127.0.0.2:9/secret")
    assert len(server.requests) == 1


def test_an_idle_socket_closed_by_the_server_is_resent_on_a_fresh_one(probe, raw):
    # The server drops the kept-alive socket when the second request arrives (an idle
    # timeout racing the request): the probe resends it once on a fresh connection.
    server = raw(lambda n, head: (b"", True) if n == 2 else (_ok(), False))
    assert get(probe, server.url()).status == 200
    assert get(probe, server.url()).status == 200
    assert server.connections == 2 and len(server.requests) == 3


def test_a_socket_closed_while_idle_is_not_reused(probe, raw):
    server = raw(lambda n, head: (_ok(), True))  # closes after answering, without saying so
    assert get(probe, server.url()).status == 200
    deadline = time.monotonic() + 5
    while not server.closed:  # the server's FIN is on its way (loopback: already arrived)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    probe.run(asyncio.sleep(0))  # one turn of the prober's loop: it reads the EOF
    assert get(probe, server.url()).status == 200
    assert server.connections == 2 and len(server.requests) == 2


def test_a_body_over_the_cap_is_cut_and_the_socket_dropped(probe, raw):
    big = b"x" * 300_000  # more than one read: the rest is never read, the socket dropped
    server = raw(lambda n, head: (_ok(big), False))
    response = get(probe, server.url(), max_body=1024)
    assert response.truncated and response.body == big[:1024]
    get(probe, server.url(), max_body=1024)
    assert server.connections == 2


@pytest.mark.parametrize(
    ("payload", "error", "category"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", prober.ProbeProtocolError, "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", prober.ProbeProtocolError, "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", prober.ProbeConnectionError, "connection closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", prober.ProbeConnectionError,
         "connection closed"),
    ],
)
def test_broken_answers_raise_named_errors(probe, raw, payload, error, category):
    server = raw(lambda n, head: (payload, True))
    with pytest.raises(error) as caught:
        get(probe, server.url())
    assert caught.value.category == category


def test_a_refused_connection_and_a_bad_url(probe):
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(prober.ProbeConnectionError):
        get(probe, f"http://127.0.0.1:{port}/health")
    with pytest.raises(ValueError, match="scheme"):
        get(probe, "ftp://127.0.0.1/health")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


def test_https_is_verified_against_the_ca_bundle(raw, certificate, monkeypatch):
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = raw(lambda n, head: (_ok(), False), tls=tls)

    untrusting = prober.Prober()
    try:
        with pytest.raises(prober.ProbeConnectionError, match="TLS error"):
            get(untrusting, server.url(scheme="https"))
    finally:
        untrusting.close()

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    trusting = prober.Prober()
    try:
        assert get(trusting, server.url(scheme="https")).body == JSON_OK
    finally:
        trusting.close()


def test_the_timeout_bounds_the_whole_probe_even_when_bytes_keep_dripping(raw, make_service):
    def drip(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(300):  # 30 s of headers, a byte well within any per-read timeout
            try:
                conn.sendall(b"X-Drip: 1\r\n")
            except OSError:
                return  # the prober hung up: what this test wants
            time.sleep(0.1)

    server = raw(lambda n, head: (drip, True))
    svc = make_service(url=server.url(""), health_path="/health", check_timeout_seconds=1)
    started = time.monotonic()
    report = health.health_sweep()
    assert report.probed == 1
    # Cut at the 1 s total timeout; a per-read timeout would wait the whole 30 s drip. The
    # bound is generous (a loaded machine), and still far below the drip.
    assert time.monotonic() - started < 15
    snap = HealthSnapshot.objects.get(service=svc)
    assert snap.status == "critical" and snap.error.startswith("ProbeTimeout")
    svc.refresh_from_db()
    assert svc.status_reason == "timed out after 1 s"


def test_a_sweep_names_protocol_and_connection_errors(raw, make_service):
    garbage = raw(lambda n, head: (b"garbage\r\n", True))
    sock = socket.create_server(("127.0.0.1", 0))
    refused_port = sock.getsockname()[1]
    sock.close()
    bad = make_service(url=garbage.url(""), health_path="/health")
    refused = make_service(url=f"http://127.0.0.1:{refused_port}", health_path="/health")
    health.health_sweep()
    bad.refresh_from_db()
    refused.refresh_from_db()
    # `read` keys see categories; the raw detail stays in the staff-only snapshot.
    assert (bad.status_reason, refused.status_reason) == ("not HTTP", "connection refused")
    assert "garbage" not in bad.status_reason
    assert "garbage" in HealthSnapshot.objects.get(service=bad).error


def test_many_probes_at_once_stay_within_the_in_flight_bound(probe, raw):
    active = peak = 0
    lock = threading.Lock()

    def slow(conn):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        conn.sendall(_ok())

    server = raw(lambda n, head: (slow, False))
    done = threading.Event()
    results = []

    def finished(job, response, error, seconds):
        results.append((job, response.status if response else error))
        if len(results) == 40:
            done.set()

    gate = prober.Gate(max_in_flight=5, concurrency=5, slow_after=10)
    probe.submit(range(40), url_of=lambda j: server.url(f"/{j}"), timeout_of=lambda j: 5, done=finished, gate=gate)
    assert done.wait(20)
    assert sorted(j for j, _ in results) == list(range(40)) and {s for _, s in results} == {200}
    assert 2 <= peak <= 5


def test_a_forked_process_gets_its_own_prober():
    first = prober.prober()
    assert prober.prober() is first
    first.pid = -1  # as seen from a child after fork
    second = prober.prober()
    assert second is not first and second.thread.is_alive()
    first.close()


def test_a_sweep_whose_prober_goes_silent_fails_visibly_instead_of_waiting_forever(
    raw, make_service, monkeypatch
):
    server = raw(lambda n, head: (_ok(), False))
    answered = make_service(url=server.url(""), health_path="/health", check_timeout_seconds=1)
    lost = make_service(url=server.url(""), health_path="/lost", check_timeout_seconds=1)
    monkeypatch.setattr(health_loop, "PROBER_STALL_MARGIN_SECONDS", 0.5)
    real_submit = prober.Prober.submit

    def submit_losing_one(self, jobs, **kw):  # a prober that loses a probe (as if its thread died)
        real_submit(self, [j for j in jobs if j.service.pk != lost.pk], **kw)

    monkeypatch.setattr(prober.Prober, "submit", submit_losing_one)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"no probe result .* 1 probe\(s\) out .*prober stalled"):
        health_loop.health_sweep_run()
    assert time.monotonic() - started < 30  # fails within the margin, not after the probe's lease
    assert HealthSnapshot.objects.filter(service=answered).count() == 1  # what came back is kept
    assert not HealthSnapshot.objects.filter(service=lost).exists()
