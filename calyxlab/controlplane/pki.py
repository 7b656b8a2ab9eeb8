"""The lab cluster's public-key infrastructure: one CA, the API server's serving certificate,
client certificates for every identity the control plane and the lab's nodes use, and the
service-account signing key pair — written as PEM files, as kubeadm lays them out.

Identities follow Kubernetes' conventions, so the real authorizers see what they would see on a
kubeadm cluster: ``kubernetes-admin`` in ``system:masters`` (the admin kubeconfig),
``system:kube-controller-manager``, ``system:kube-scheduler``, ``system:kube-proxy`` and
``system:node:NAME`` in ``system:nodes`` (what the Node authorizer and NodeRestriction check).
Keys are ECDSA P-256: fast to make and accepted everywhere Kubernetes takes a key.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClientIdentity:
    """Who a client certificate says it is: user name (CN) and groups (O)."""

    user: str
    groups: tuple[str, ...] = ()

    @property
    def file_stem(self) -> str:
        return self.user.replace(":", "-")


ADMIN = ClientIdentity("kubernetes-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("system:kube-controller-manager")
SCHEDULER = ClientIdentity("system:kube-scheduler")
KUBE_PROXY = ClientIdentity("system:kube-proxy")


def node_identity(node: str) -> ClientIdentity:
    """The identity kubelet on ``node`` has (Node authorizer, NodeRestriction)."""
    return ClientIdentity(f"system:node:{node}", ("system:nodes",))


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common: str, groups: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common)])


class ClusterPKI:
    """A CA in ``directory`` (made on first use, reused after) that issues the lab's certificates."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)
        self.ca = KeyPair(self.dir / "ca.crt", self.dir / "ca.key")
        if not (self.ca.cert.exists() and self.ca.key.exists()):
            self._make_ca()
        self._ca_key = serialization.load_pem_private_key(self.ca.key.read_bytes(), None)
        self._ca_cert = x509.load_pem_x509_certificate(self.ca.cert.read_bytes())

    def _make_ca(self) -> None:
        key = _new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        name = _name("calyx-lab-ca")
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + 10 * VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(self.ca.key, _key_pem(key))
        self.ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue(self, stem: str, subject: x509.Name, usage: ExtendedKeyUsageOID,
               sans: Sequence[x509.GeneralName] = ()) -> KeyPair:
        pair = KeyPair(self.dir / f"{stem}.crt", self.dir / f"{stem}.key")
        key = _new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(self._ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + VALIDITY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                                content_commitment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self._ca_key.public_key()), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        _write_private(pair.key, _key_pem(key))
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pair

    def serving(self, stem: str, common_name: str, ips: Sequence[str], dns: Sequence[str]) -> KeyPair:
        """A TLS server certificate valid for every address and name given."""
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(name) for name in dns]
        return self._issue(stem, _name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def client(self, identity: ClientIdentity) -> KeyPair:
        """A client certificate for ``identity`` (reissued on every call)."""
        return self._issue(identity.file_stem, _name(identity.user, identity.groups),
                           ExtendedKeyUsageOID.CLIENT_AUTH)

    def service_account_keys(self) -> KeyPair:
        """The service-account token signing key (``sa.key``) and its public half (``sa.pub``),
        made once."""
        pair = KeyPair(self.dir / "sa.pub", self.dir / "sa.key")
        if not (pair.cert.exists() and pair.key.exists()):
            key = _new_key()
            _write_private(pair.key, _key_pem(key))
            pair.cert.write_bytes(key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return pair
