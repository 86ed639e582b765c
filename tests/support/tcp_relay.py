"""A TCP relay on loopback in front of a server (the simulated exchange's websocket port), whose
link can be cut: ``cut()`` drops every relayed connection at once, without a close frame, and
refuses new ones (accepted, then closed) until ``restore()``. The network going away, as opposed
to the server closing: the client sees its connection die and its reconnects fail."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class TcpRelay:
    """``with TcpRelay(port) as relay: relay.url``; ``relay.cut()``, ``relay.restore()``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.relayed = 0  # connections relayed upstream
        self.refused = 0  # connections closed at once while cut

    @property
    def url(self) -> str:
        """The websocket base URL of the relay, ``ws://127.0.0.1:PORT/``."""
        return f"ws://127.0.0.1:{self._listener.getsockname()[1]}/"

    def __enter__(self) -> TcpRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self._drop_all()

    def cut(self) -> None:
        """Drop every relayed connection now and refuse new ones."""
        with self._lock:
            self._cut = True
        self._drop_all()

    def restore(self) -> None:
        """Relay new connections again."""
        with self._lock:
            self._cut = False

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _abort(sock)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                refuse = self._cut
                if refuse:
                    self.refused += 1
            if refuse:
                _abort(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _abort(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
                self.relayed += 1
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(target)
            _abort(source)
            _abort(target)


def _abort(sock: socket.socket) -> None:
    """Close at once: a reset, not an orderly shutdown (nothing more is delivered)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
