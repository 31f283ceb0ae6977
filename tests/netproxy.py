"""A small local TCP proxy that delays traffic and drops connections, for fault tests.

It sits between a client and a real server on loopback: every chunk is held for
`delay_s` before it is forwarded, and `drop_all()` cuts every open connection (as a
flaky network would), while new connections keep being accepted unless `refuse` is set.

With `drop_first_reply`, the server-to-client side is read as HTTP/2 frames and the
connection is cut at the first response frame of any RPC (HEADERS or DATA on a stream):
the server has done the work, the client never hears of it. That is a lost reply, made
deterministic. It happens once; later connections pass untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

FRAME_HEADER = 9  # HTTP/2: length (3 bytes), type, flags, stream ID (4 bytes)
DATA, HEADERS = 0x0, 0x1


@dataclass
class TcpProxy:
    target_port: int
    delay_s: float = 0.0
    refuse: bool = False
    listen_port: int = 0
    _server: socket.socket | None = None
    _connections: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: threading.Event = field(default_factory=threading.Event)
    bytes_forwarded: int = 0
    drop_first_reply: bool = False
    replies_dropped: int = 0
    target_unix: str = ""  # a unix socket to forward to instead of target_port
    reply_delay_s: float = 0.0  # extra hold on server-to-client traffic only
    watch_for: bytes = b""  # set `seen` once a client chunk holding these bytes went through
    seen: threading.Event = field(default_factory=threading.Event)

    def start(self) -> TcpProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.listen_port))
        server.listen(64)
        self.listen_port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            replies = self._pump_frames if self.drop_first_reply else self._pump
            threading.Thread(target=replies, args=(upstream, client, True), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if self.target_unix:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target_unix)
            return upstream
        return socket.create_connection(("127.0.0.1", self.target_port), timeout=5)

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool = False) -> None:
        try:
            while chunk := source.recv(65536):
                if self.delay_s or (replies and self.reply_delay_s):
                    time.sleep(self.delay_s + (self.reply_delay_s if replies else 0.0))
                sink.sendall(chunk)
                self.bytes_forwarded += len(chunk)
                if self.watch_for and not replies and self.watch_for in chunk:
                    self.seen.set()
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _pump_frames(self, source: socket.socket, sink: socket.socket, _replies: bool) -> None:
        """Forward whole HTTP/2 frames; cut the connection at the first reply while armed."""
        buffer = b""
        try:
            while chunk := source.recv(65536):
                buffer += chunk
                while len(buffer) >= FRAME_HEADER:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < FRAME_HEADER + length:
                        break
                    kind, stream = buffer[3], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                    if self.drop_first_reply and stream and kind in (DATA, HEADERS):
                        self.drop_first_reply = False
                        self.replies_dropped += 1
                        self.drop_all()
                        return
                    frame, buffer = buffer[: FRAME_HEADER + length], buffer[FRAME_HEADER + length :]
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    sink.sendall(frame)
                    self.bytes_forwarded += len(frame)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def drop_all(self) -> None:
        """Cut every open connection mid-stream."""
        with self._lock:
            connections, self._connections = self._connections, []
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self._closed.set()
        if self._server:
            self._server.close()
        self.drop_all()
