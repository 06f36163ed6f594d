"""The certificates and keys of a development cluster, generated with ``cryptography``.

``kubeclip.dev.cluster`` calls ``write_cluster_pki`` once per cluster. One CA signs
every certificate: the serving certificates of kube-apiserver and etcd, and the client
certificates with which the admin, the controller manager, the scheduler, kwok and
kube-apiserver itself (towards etcd) authenticate. kube-apiserver trusts the CA through
``--client-ca-file``; the certificate's CN becomes the user name and its O fields the
groups. etcd, the controller manager and the scheduler share one loopback serving certificate. A separate RSA key signs and verifies service-account tokens.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Validity of every certificate. Development clusters are recreated long before that.
VALIDITY = datetime.timedelta(days=365)
#: Names the apiserver's serving certificate covers besides 127.0.0.1. In-cluster clients
#: use the kubernetes.default.svc names; none run here, but kubectl's checks expect them.
APISERVER_DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")

#: Client identities: file stem -> (user name, groups). system:masters bypasses RBAC.
#: kwok acts as the kubelet of every simulated node and writes node and pod status. The
#: Node authorizer is off because there are no real kubelets, so kwok gets system:masters.
CLIENT_IDENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("kubeclip-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kwok": ("kwok-controller", ("system:masters",)),
    "apiserver-etcd-client": ("kube-apiserver-etcd-client", ()),
}
#: Client certificate CN with which kube-apiserver calls aggregated API servers.
FRONT_PROXY_USER = "front-proxy-client"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both in PEM."""

    certificate_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class ClusterPki:
    """Paths of the PKI files of one cluster, all inside one folder."""

    directory: Path

    def certificate(self, stem: str) -> Path:
        return self.directory / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"

    @property
    def ca_certificate(self) -> Path:
        return self.certificate("ca")

    @property
    def service_account_key(self) -> Path:
        return self.directory / "service-account.key"


def create_certificate_authority(common_name: str) -> KeyPair:
    """Create a self-signed CA certificate and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = _base_builder(name, name, key.public_key())
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    certificate = builder.sign(key, hashes.SHA256())
    return _to_pem(certificate, key)


def issue_certificate(
    authority: KeyPair,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
) -> KeyPair:
    """Issue a certificate signed by ``authority``, good for TLS serving (when it has SANs) and client auth."""
    ca_certificate = x509.load_pem_x509_certificate(authority.certificate_pem)
    ca_key = serialization.load_pem_private_key(authority.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in organizations]
    subject = x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    builder = _base_builder(subject, ca_certificate.subject, key.public_key())
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if ip_addresses or dns_names else [])
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if ip_addresses or dns_names:
        names = [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
        names += [x509.DNSName(dns_name) for dns_name in dns_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _to_pem(builder.sign(ca_key, hashes.SHA256()), key)  # type: ignore[arg-type]


def create_service_account_key() -> bytes:
    """Return a PEM RSA private key for signing service-account tokens (RS256, the apiserver's default)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_cluster_pki(directory: Path, service_ip: str) -> ClusterPki:
    """Write the CA, serving and client certificates and the service-account key of one cluster.

    ``service_ip`` is the first address of the service range, which kube-apiserver
    expects in its serving certificate for the ``kubernetes`` Service.
    """
    pki = ClusterPki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    authority = create_certificate_authority("kubeclip-dev-ca")
    _write_pair(pki, "ca", authority)
    serving = issue_certificate(authority, "kube-apiserver", ip_addresses=("127.0.0.1", service_ip), dns_names=APISERVER_DNS_NAMES)
    _write_pair(pki, "apiserver", serving)
    # etcd, the controller manager and the scheduler serve with one certificate for 127.0.0.1.
    loopback = issue_certificate(authority, "kubeclip-loopback", ip_addresses=("127.0.0.1",), dns_names=("localhost",))
    _write_pair(pki, "loopback-serving", loopback)
    _write_pair(pki, "front-proxy-client", issue_certificate(authority, FRONT_PROXY_USER))
    for stem, (user, groups) in CLIENT_IDENTITIES.items():
        _write_pair(pki, stem, issue_certificate(authority, user, organizations=groups))
    _write_private(pki.service_account_key, create_service_account_key())
    return pki


def _base_builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    # Backdated by an hour, so a clock that is slightly behind still accepts a fresh certificate.
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
    )


def _to_pem(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), key_pem)


def _write_pair(pki: ClusterPki, stem: str, pair: KeyPair) -> None:
    pki.certificate(stem).write_bytes(pair.certificate_pem)
    _write_private(pki.key(stem), pair.key_pem)


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)
