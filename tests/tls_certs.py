"""Throwaway certificates for TLS tests, made with the openssl CLI (no extra package).

``make_pki(dir)`` writes a CA, a server certificate for ``localhost`` / ``127.0.0.1`` signed by it, a
client certificate signed by it, and a second, unrelated CA (the "wrong CA" a client must refuse).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


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
