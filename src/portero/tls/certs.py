"""Certificates as data: what a PEM chain says (names, validity, fingerprint), keys and requests made for ACME, and
a self-signed stand-in. All through `cryptography`: nothing here parses ASN.1 by hand.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the message names the file or host and what is wrong."""


class AcmeFailure(RuntimeError):
    """An ACME attempt that failed; the message says at which step and why, for the event and the API. Here and
    not in acmeclient, so that catching it does not import `acme` (0.2 s of CPU in every daemon's start-up)."""


@dataclass(frozen=True)
class Facts:
    """What portero needs to know of a certificate (the first of a chain)."""

    names: tuple[str, ...]  # DNS names of its subjectAltName, lowercase (its CN when it has none)
    not_before: float  # Unix time
    not_after: float
    fingerprint: str  # SHA-256 of the DER certificate, hex
    serial: str  # hex
    issuer: str

    def renew_at(self, ratio: float) -> float:
        """When `ratio` of its life has passed (2/3: Let's Encrypt's and certbot's advice)."""
        return self.not_before + ratio * (self.not_after - self.not_before)


def facts(chain_pem: bytes) -> Facts:
    """The facts of the first certificate of a PEM chain; CertificateError if there is none."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from exc
    cert = chain[0]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(dict.fromkeys(n.lower() for n in san.get_values_for_type(x509.DNSName)))
    except x509.ExtensionNotFound:
        names = ()
    if not names:
        names = tuple(str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return Facts(
        names=names,
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        serial=format(cert.serial_number, "x"),
        issuer=cert.issuer.rfc4514_string(),
    )


def serves(names: tuple[str, ...], host: str) -> bool:
    """Whether a certificate for `names` is valid for `host` (one wildcard label at most, as browsers check)."""
    host = host.lower()
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def new_key(kind: str) -> PrivateKey:
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError(f"a key of type {type(key).__name__}: expected ECDSA or RSA")
    return key


def self_signed(names: list[str], key: PrivateKey, *, days: float = 90) -> bytes:
    """A self-signed certificate for `names` (the admin API's stand-in until the real one is there)."""
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint_of(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()
