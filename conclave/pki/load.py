"""Reading certificates and keys from files, with one-line errors.

Every function raises :class:`~conclave.pki.errors.PkiError` whose message
names the file and what is wrong with it, ready for the CLI to print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conclave.pki.errors import PkiError

KeyType: TypeAlias = Literal["ec", "rsa"]
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def read_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``; ``what`` ("certificate", "key") names it in errors."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise PkiError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_certificate(path: Path) -> x509.Certificate:
    """Read the first PEM certificate in ``path``."""
    return load_certificates(path)[0]


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Read every PEM certificate in ``path`` (a leaf-plus-chain file gives several)."""
    return parse_certificates(read_file(Path(path), "certificate"), Path(path))


def parse_certificates(data: bytes, path: Path) -> list[x509.Certificate]:
    """Every PEM certificate in ``data`` (read from ``path``, named in errors)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PkiError(f"{path} does not contain a PEM certificate") from None
    if not certs:
        raise PkiError(f"{path} does not contain a PEM certificate")
    return certs


def load_private_key(path: Path, data: bytes, passphrase: bytes | None) -> PrivateKey:
    """Parse a PEM private key read from ``path``, mapping failures to :class:`PkiError`."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError:
        # cryptography signals "encrypted but no password" and "password but
        # not encrypted" with TypeError; tell the two apart by what was given.
        if passphrase:
            raise PkiError(f"key {path} is not encrypted but a passphrase was given") from None
        raise PkiError(f"key {path} is encrypted: a passphrase is needed") from None
    except ValueError:
        if passphrase and b"ENCRYPTED" in data:
            raise PkiError(f"wrong passphrase for key {path}") from None
        raise PkiError(f"{path} does not contain a readable PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"key {path} is neither ECDSA nor RSA")
    return key


def public_der(item: PrivateKey | x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo DER of a key or certificate: equal when they match."""
    return item.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_type_of(item: PrivateKey | x509.Certificate) -> KeyType:
    """``"ec"`` or ``"rsa"``: which kind of key a key or certificate holds."""
    public = item.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa"
    raise PkiError(f"unsupported key algorithm {type(public).__name__}: use ECDSA or RSA")


def basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    """The basicConstraints extension of ``cert``, or None when it has none."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """True when ``cert`` says it is a CA (basicConstraints cA=TRUE)."""
    constraints = basic_constraints(cert)
    return constraints is not None and constraints.ca
