"""A hostile upstream on loopback, for the egress tests: every way a registered service can
try to reach inside, hang the portal or exhaust it.

``Hostile`` answers by path on 127.0.0.1:

- ``/ok``         a healthy JSON answer;
- ``/redirect``   302 to the stand-in metadata service (``Metadata``, on 127.0.0.2);
- ``/redirect-auth`` 302 to a URL carrying ``user:pass@``;
- ``/drip``       headers, then one body byte every ``drip_every`` seconds, forever;
- ``/gzip-bomb``  a ~100 KB gzip body that inflates to 100 MB;
- ``/huge``       a 150 MB body (sent as fast as the client reads);
- ``/not-modified`` 304, ``/switching`` 101.

``banner_server`` speaks no HTTP (an SSH banner); ``black_hole`` accepts and never answers.
Each records what it received, so tests assert that nothing reached the metadata stand-in.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Callable

SECRET = b'{"AccessKeyId": "ASIA-STAND-IN-SECRET"}'
_BOMB: bytes | None = None


def gzip_bomb() -> bytes:
    global _BOMB
    if _BOMB is None:
        # Compressed a block at a time: the test process never holds the 100 MB itself.
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
        block = b"\0" * (1024 * 1024)
        _BOMB = b"".join(packer.compress(block) for _ in range(100)) + packer.flush()
    return _BOMB


class _Server:
    """Accepts on (host, 0); ``handle(conn)`` per connection on its own thread."""

    def __init__(self, host: str, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server((host, 0), backlog=1024)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.handle = handle
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.heads: list[bytes] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open_now += 1
                self.max_open = max(self.max_open, self.open_now)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open_now -= 1
            try:
                conn.close()
            except OSError:
                pass

    def read_head(self, conn: socket.socket) -> bytes:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return b""
            buf += data
        head = buf.split(b"\r\n\r\n", 1)[0]
        with self.lock:
            self.heads.append(head)
        return head

    def close(self) -> None:
        self.stop_event.set()
        self.sock.close()


class Metadata(_Server):
    """The stand-in cloud metadata service (127.0.0.2): answers a secret to anyone who asks."""

    def __init__(self) -> None:
        def handle(conn: socket.socket) -> None:
            if self.read_head(conn):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(SECRET), SECRET))

        super().__init__("127.0.0.2", handle)


class Hostile(_Server):
    def __init__(self, *, metadata: Metadata, drip_every: float = 0.5) -> None:
        self.metadata = metadata
        self.drip_every = drip_every
        super().__init__("127.0.0.1", self._handle)

    def _handle(self, conn: socket.socket) -> None:
        head = self.read_head(conn)
        if not head:
            return
        path = head.split(b" ", 2)[1].split(b"?")[0].decode()
        send = conn.sendall
        if path == "/ok":
            body = b'{"status": "healthy"}'
            send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))
        elif path == "/redirect":
            send(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                 % self.metadata.url("/latest/meta-data/iam").encode())
        elif path == "/redirect-auth":
            send(b"HTTP/1.1 302 Found\r\nLocation: http://user:pass@127.0.0.1:%d/ok\r\n"
                 b"Content-Length: 0\r\nConnection: close\r\n\r\n" % self.port)
        elif path == "/drip":
            send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not self.stop_event.wait(self.drip_every):
                send(b" ")
        elif path == "/gzip-bomb":
            bomb = gzip_bomb()
            send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(bomb))
            send(bomb)
        elif path == "/huge":
            size = 150 * 1024 * 1024
            send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n" % size)
            block = b"x" * 65536
            for _ in range(size // len(block)):
                send(block)
        elif path == "/not-modified":
            send(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n")
        elif path == "/switching":
            send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            time.sleep(0.5)
        else:
            send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def banner_server() -> _Server:
    """A TCP service that is not HTTP: it greets with an SSH banner."""

    def handle(conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
        time.sleep(0.2)

    return _Server("127.0.0.1", handle)


def black_hole() -> _Server:
    """Accepts connections and never answers (until closed)."""
    server: _Server

    def handle(conn: socket.socket) -> None:
        server.stop_event.wait(120)

    server = _Server("127.0.0.1", handle)
    return server
