"""A local TCP proxy that can stop forwarding without closing anything: a half-open connection.

    with TcpProxy(target_port) as proxy:
        connect to 127.0.0.1:proxy.port ...
        proxy.freeze()     # bytes stop flowing both ways; sockets stay open
        proxy.thaw()       # flowing again (new and existing connections)
        proxy.cut()        # close every open connection (RST-like)
        proxy.down()       # like a stopped server: open connections cut, new ones closed at once
        proxy.up()         # serving again
"""

from __future__ import annotations

import select
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._down = threading.Event()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()
        self.cut()

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def down(self) -> None:
        self._down.set()
        self.cut()

    def up(self) -> None:
        self._down.clear()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)  # the peers hear it at once, even while a pump holds the socket
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                if self._frozen.is_set():
                    self._stop.wait(0.05)  # hold the bytes: neither side hears anything, nothing is closed
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):  # ValueError: cut() closed a socket under select (its fd is -1)
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
