"""A TCP proxy on loopback that kills the gateway process behind it mid-request.

The first connection goes to the victim: a gateway process of its own on the same Redis. The
moment the victim starts answering (it has made the record and sent its Celery message; the
answer comes after both), the proxy SIGKILLs the victim's process group and closes the client's
connection without a byte of the answer: what a client sees when a gateway process dies between
making a record and answering. Every later connection goes to the survivor, another gateway
process on the same Redis, as a load balancer would send a client's retry.

It keeps what went through it (`sent`, `answered`: the bytes of each connection, each way) so
a test can read the headers of every attempt.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Self


class KillingProxy:
    def __init__(self, victim: int, survivor: int, kill: Callable[[], None]) -> None:
        self.victim, self.survivor, self.kill = victim, survivor, kill
        self.killed = threading.Event()
        self.sent: list[bytearray] = []
        self.answered: list[bytearray] = []
        self._lock = threading.Lock()
        self._victim_taken = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # to see `_stop` (a close does not wake an accept)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> Self:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        deadline = time.monotonic() + 10
        while (alive := [t for t in list(self._threads) if t.is_alive()]) and (
            left := deadline - time.monotonic()
        ) > 0:
            alive[0].join(timeout=left)

    def headers(self, name: str) -> list[str]:
        """The value of header `name` in every request, in order."""
        pattern = re.compile(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*(.*?)\r$")
        with self._lock:
            chunks = [bytes(b) for b in self.sent]
        return [m.decode() for b in chunks for m in pattern.findall(b)]

    def answers(self) -> list[bytes]:
        with self._lock:
            return [bytes(b) for b in self.answered]

    # ---------------------------------------------------------------- internals
    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        with self._listener:
            while not self._stop.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                conn.settimeout(None)
                self._take(conn)

    def _take(self, conn: socket.socket) -> None:
        with self._lock:
            to_victim, self._victim_taken = not self._victim_taken, True
            sent, answered = bytearray(), bytearray()
            self.sent.append(sent)
            self.answered.append(answered)
        self._spawn(self._connection, conn, to_victim, sent, answered)

    def _connection(
        self, client: socket.socket, to_victim: bool, sent: bytearray, answered: bytearray
    ) -> None:
        port = self.victim if to_victim else self.survivor
        with client, socket.create_connection(("127.0.0.1", port)) as upstream:
            self._spawn(self._pump_requests, client, upstream, sent)
            while data := _recv(upstream):
                if to_victim:  # it has made the record: kill it before its answer gets out
                    self.kill()
                    self.killed.set()
                    break
                with self._lock:
                    answered += data
                client.sendall(data)
            _close(client)

    def _pump_requests(self, client: socket.socket, upstream: socket.socket, sent: bytearray):
        while data := _recv(client):
            with self._lock:
                sent += data
            try:
                upstream.sendall(data)
            except OSError:
                break
        _close(upstream)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
