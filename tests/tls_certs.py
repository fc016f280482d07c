"""Throwaway certificates for TLS tests, made with the openssl CLI (no extra package).

``make_pki(dir)`` writes a CA, a server certificate for ``localhost`` / ``127.0.0.1`` signed by it, a
client certificate signed by it, and a second, unrelated CA (the "wrong CA" a client must refuse).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Self


@dataclass(frozen=True)
class Pki:
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", str(key), "-out", str(cert), cwd=d)
    return cert, key


def _leaf(d: Path, name: str, ca: Path, ca_key: Path, ext: str) -> tuple[Path, Path]:
    key, csr, cert, extfile = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem", d / f"{name}.ext"
    extfile.write_text(ext)
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr), cwd=d)
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
         "-extfile", str(extfile), "-out", str(cert), cwd=d)
    return cert, key


def make_pki(d: Path) -> Pki:
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl CLI is needed to make test certificates (apt-get install openssl)")
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca(d, "test-ca")
    wrong_ca, _ = _ca(d, "wrong-ca")
    server_cert, server_key = _leaf(d, "server", ca, ca_key,
                                    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client_cert, client_key = _leaf(d, "client", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    for path in d.iterdir():  # libpq refuses a private key others can read
        path.chmod(0o600 if path.suffix == ".key" else 0o644)
    return Pki(ca, ca_key, server_cert, server_key, client_cert, client_key, wrong_ca)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TlsTerminatingProxy:
    """Accepts TLS on a free local port with the test server certificate and forwards the plain bytes to
    ``upstream`` (a shared service that has no TLS listener of its own). Clients then do a real TLS
    handshake and speak their protocol through it; the service itself is not reconfigured.
    """

    def __init__(self, pki: Pki, upstream: tuple[str, int], require_client_cert: bool = False) -> None:
        import socket
        import ssl
        import threading

        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        if require_client_cert:
            self._ctx.verify_mode = ssl.CERT_REQUIRED
            self._ctx.load_verify_locations(str(pki.ca))
        self.upstream = upstream
        self.handshakes = 0  # completed TLS handshakes
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._socks: list = []
        self._thread = threading.Thread(target=self._accept, name="tls-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket
        import ssl
        import threading

        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(10)
            try:
                tls = self._ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            self.handshakes += 1
            tls.settimeout(None)
            try:
                up = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                tls.close()
                continue
            up.settimeout(None)
            self._socks += [tls, up]
            threading.Thread(target=self._relay, args=(tls, up), daemon=True).start()

    def _relay(self, tls, up) -> None:
        """One thread per connection, so the TLS socket is never used by two threads at once."""
        import select

        try:
            while not self._stop.is_set():
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], 0.5)[0]
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (up if src is tls else tls).sendall(data)
        except OSError:
            pass
        finally:
            for sock in (tls, up):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
