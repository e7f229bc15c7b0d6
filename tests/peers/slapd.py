"""Debian's OpenLDAP server (`slapd`), started by the tests on loopback (`make peers`
installs `slapd` and `ldap-utils`).

`make_pki()` writes a test CA (made with `cryptography`), a server certificate for
127.0.0.1 and localhost signed by it, and a second one signed by it whose name does not
match (`wrong.example.test`). `Slapd` writes a `slapd.conf` into a temp dir, loads the
test tree with `slapadd`, and runs `slapd -d 0` on two free loopback ports, `url`
(StartTLS) and `ldaps_url`; every operation needs TLS (`security tls=1`).

The tree (`TREE`): people under ou=people, groups under ou=groups, the service account
`cn=smsgw-svc,ou=services`. Nesting: olivia is in night-shift, which is in ward-nurses,
which is in smsgw-operators. locked has a ppolicy `pwdAccountLockedTime`; nogroup is in
no mapped group; `uid=elsewhere` is a referral to another server.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.directory.client import CheckedTls
from tests.ports import free_port

START_TIMEOUT = 15.0
SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret-for-tests"
SERVICE_DN = f"cn=smsgw-svc,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret-for-tests"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
PASSWORDS = {
    "olivia": "olivia-ward-7-night",
    "adam": "adam-admin-passphrase",
    "vera": "vera-views-the-queue",
    "nogroup": "nogroup-canteen-pass",
    "locked": "locked-but-right-pass",
    "mover": "mover-leaves-soon-pass",
}
ROLE_GROUPS = {
    f"cn=smsgw-admins,{GROUPS}": "admin",
    f"cn=smsgw-operators,{GROUPS}": "operator",
    f"cn=smsgw-viewers,{GROUPS}": "viewer",
    f"cn=smsgw-auditors,{GROUPS}": "auditor",
}


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


def _person(uid: str, extra: str = "") -> str:
    return (
        f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
        f"sn: {uid}\nuserPassword: {PASSWORDS[uid]}\n{extra + chr(10) if extra else ''}\n"
    )


PLACEHOLDER = f"cn=placeholder,{SUFFIX}"  # groupOfNames needs a member: groups never empty


def _group(cn: str, *members: str) -> str:
    lines = "".join(f"member: {m}\n" for m in (PLACEHOLDER, *members))
    return f"dn: {group_dn(cn)}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}\n"


TREE = (
    f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
    f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
    f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n\n"
    f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n"
    f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
    f"cn: smsgw-svc\nuserPassword: {SERVICE_PASSWORD}\n\n"
    + _person("olivia")
    + _person("adam")
    + _person("vera")
    + _person("nogroup")
    + _person("locked", "pwdAccountLockedTime: 000001010000Z")
    + _person("mover")
    + f"dn: uid=elsewhere,{PEOPLE}\nobjectClass: referral\nobjectClass: extensibleObject\n"
    "uid: elsewhere\nref: ldap://ldap.elsewhere.example/uid=elsewhere,dc=elsewhere\n\n"
    + _group("smsgw-admins", user_dn("adam"))
    + _group("smsgw-operators", group_dn("ward-nurses"), user_dn("mover"), user_dn("locked"))
    + _group("ward-nurses", group_dn("night-shift"))
    + _group("night-shift", user_dn("olivia"))
    + _group("smsgw-viewers", user_dn("vera"))
    + _group("smsgw-auditors", SERVICE_DN)
    + _group("canteen", user_dn("nogroup"))
)


# -- certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path  # what the gateway trusts (`directory.ca_file`)
    cert: Path  # 127.0.0.1 and localhost
    key: Path
    wrong_cert: Path  # signed by the same CA, for wrong.example.test only
    wrong_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    names: list[x509.GeneralName],
    cert_path: Path,
    key_path: Path,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slapd test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smsgw test directory CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
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
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "wrong.pem",
        directory / "wrong.key",
    )
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    good: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    _issue(ca_key, ca_name, good, pki.cert, pki.key)
    _issue(ca_key, ca_name, [x509.DNSName("wrong.example.test")], pki.wrong_cert, pki.wrong_key)
    return pki


# -- the server --------------------------------------------------------------------------


def binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()),
        None,
    )
    assert found, f"{name} is not installed (make peers installs slapd and ldap-utils)"
    return found


class Slapd:
    def __init__(self, directory: Path, pki: Pki, *, wrong_name: bool = False) -> None:
        self.directory = directory
        self.pki = pki
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"  # StartTLS
        self.ldaps_url = f"ldaps://127.0.0.1:{free_port()}"
        self._cert = pki.wrong_cert if wrong_name else pki.cert
        self._key = pki.wrong_key if wrong_name else pki.key
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        d = self.directory
        (d / "db").mkdir(parents=True, exist_ok=True)
        conf = d / "slapd.conf"
        conf.write_text(
            "include /etc/ldap/schema/core.schema\n"
            "include /etc/ldap/schema/cosine.schema\n"
            "include /etc/ldap/schema/inetorgperson.schema\n"
            "modulepath /usr/lib/ldap\n"
            "moduleload back_mdb\n"
            "moduleload ppolicy\n"
            "moduleload refint\n"
            f"pidfile {d}/slapd.pid\n"
            f"argsfile {d}/slapd.args\n"
            f"TLSCACertificateFile {self.pki.ca}\n"
            f"TLSCertificateFile {self._cert}\n"
            f"TLSCertificateKeyFile {self._key}\n"
            "security tls=1\n"  # nothing in clear: the gateway must use StartTLS
            "database mdb\n"
            "maxsize 10485760\n"
            f'suffix "{SUFFIX}"\n'
            f'rootdn "{ROOT_DN}"\n'
            f"rootpw {ROOT_PASSWORD}\n"
            f"directory {d}/db\n"
            "overlay ppolicy\n"
            "overlay refint\n"  # a renamed user stays in their groups
            "refint_attributes member\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            "access to * by users read by * none\n"
        )
        return conf

    def start(self) -> None:
        conf = self._config()
        if not (self.directory / "db" / "data.mdb").exists():
            subprocess.run(
                [binary("slapadd"), "-f", str(conf), "-q"],
                input=TREE.encode(),
                check=True,
                capture_output=True,
            )
        self._process = subprocess.Popen(
            [binary("slapd"), "-f", str(conf), "-h", f"{self.url}/ {self.ldaps_url}/", "-d", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        """Until slapd accepts a connection (or has died): a condition, with a limit."""
        deadline = time.monotonic() + START_TIMEOUT
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"slapd exited: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)  # a start-up poll in the fixture, not a wait in a test
        raise TimeoutError("slapd did not start listening")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    # -- changes a directory administrator makes ------------------------------------------

    def admin(self) -> ldap3.Connection:
        tls = CheckedTls(str(self.pki.ca))
        server = ldap3.Server("127.0.0.1", port=self.port, tls=tls, get_info=ldap3.NONE)
        conn = ldap3.Connection(server, ROOT_DN, ROOT_PASSWORD, raise_exceptions=True)
        conn.open()
        conn.start_tls()
        conn.bind()
        return conn

    def modify(self, dn: str, changes: dict[str, list[tuple[str, list[str]]]]) -> None:
        conn = self.admin()
        try:
            conn.modify(dn, changes)
        finally:
            conn.unbind()

    def rename(self, uid: str, new_uid: str) -> None:
        conn = self.admin()
        try:
            conn.modify_dn(user_dn(uid), f"uid={new_uid}")
        finally:
            conn.unbind()

    def remove_member(self, group: str, member: str) -> None:
        self.modify(group_dn(group), {"member": [(ldap3.MODIFY_DELETE, [member])]})

    def add_member(self, group: str, member: str) -> None:
        self.modify(group_dn(group), {"member": [(ldap3.MODIFY_ADD, [member])]})
