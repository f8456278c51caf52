"""Certificates and keys for a secure local deployment: a CA, a SuperLink certificate, node keys.

`fedgan certs DIR --nodes N` writes:

    ca.crt, ca.key            self-signed CA (ECDSA P-256), valid `days`
    server.pem, server.key    SuperLink certificate signed by the CA; SAN IP:127.0.0.1 and
                              DNS:localhost (without the IP SAN the SuperLink's own ServerApp
                              launcher fails verification and a run stays pending forever)
    node-<i>.key, node-<i>.pub  SuperNode authentication key pairs: ECDSA P-384 in OpenSSH
                              format, the only kind flwr 1.42 accepts (ed25519 and PEM are refused)

Private keys are written with mode 0600, every file atomically (temporary file + rename).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["make_certs", "make_node_key"]


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write atomically; private files are created 0600 before any byte lands in them."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_node_key(out: Path, i: int) -> tuple[Path, Path]:
    """Write node-<i>.key (OpenSSH private) and node-<i>.pub (OpenSSH public line)."""
    key = ec.generate_private_key(ec.SECP384R1())
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    key_path, pub_path = out / f"node-{i}.key", out / f"node-{i}.pub"
    _write(key_path, priv, private=True)
    _write(pub_path, pub + f" fedgan-node-{i}\n".encode())
    return key_path, pub_path


def make_certs(out: Path, n_nodes: int = 2, days: int = 365) -> list[Path]:
    """Write a CA, a SuperLink certificate for 127.0.0.1/localhost and `n_nodes` node key pairs.

    Returns the written paths. Existing files of the same names are replaced.
    """
    if n_nodes < 0:
        raise ValueError(f"--nodes must be >= 0, got {n_nodes}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Backdated a little: clocks of the machines that check it may lag.
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedgan local CA"))
        .issuer_name(_name("fedgan local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    written = [out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key"]
    _write(written[0], ca_cert.public_bytes(pem))
    _write(written[1], _pem_key(ca_key), private=True)
    _write(written[2], server_cert.public_bytes(pem))
    _write(written[3], _pem_key(server_key), private=True)
    for i in range(n_nodes):
        written += make_node_key(out, i)
    return written
