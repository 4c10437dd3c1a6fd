"""An organisation with a Standard Edition Front End and an Access Edge, on loopback.

The Front End and the Edge's internal side listen on 127.0.0.1, the Edge's
external side on 127.0.0.2, and remote clients connect from 127.0.0.9 (any
address of 127.0.0.0/8 works on Linux), so that what a remote user sees can
be checked for internal names and addresses. Both hosts are provisioned from
the topology by ``conclave topology provision --all`` and run by ``conclave
serve --topology FILE --host NAME``, each its own process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conclave.sip.message import Response
from conclave.topology.document import dumps_toml

from .server import conclave
from .sipclient import SipClient, digest_header
from .test_roles import RoleProcess, free_ports

DOMAIN = "example.test"
EDGE_EXTERNAL = "127.0.0.2"
REMOTE = "127.0.0.9"
"""Where remote users connect from."""
INTERNAL_NAMES = ("fe1", "edge1", "127.0.0.1")
"""What must never appear in a message a remote user receives."""
PASSWORDS = {"alice": "Wonderland-Tea-41", "bob": "Builder-Crane-52", "carol": "Christmas-Song-63"}
REG_URI = f"sip:{DOMAIN}"


@dataclass
class EdgeDeployment:
    root: Path
    fe_port: int
    internal_port: int
    access_port: int
    processes: list[RoleProcess] = field(default_factory=list)

    @property
    def ca(self) -> str:
        return str(self.root / "ca" / "ca.crt")

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def start(self, host: str, ready: str) -> RoleProcess:
        process = RoleProcess(
            ["serve", "--topology", str(self.root / "topology.toml"), "--host", host]
        ).start()
        self.processes.append(process)
        process.event(ready)
        return process

    def remote(self, source: str = REMOTE) -> SipClient:
        """A client on the internet, connected to the Edge's external side."""
        return SipClient(
            "tls", self.access_port, domain=DOMAIN, ca=self.ca, host=source,
            server=EDGE_EXTERNAL, server_name=f"sip.{DOMAIN}",
        )  # fmt: skip

    def internal(self) -> SipClient:
        """A client inside, connected to the Front End directly."""
        return SipClient(
            "tls", self.fe_port, domain=DOMAIN, ca=self.ca, server_name=f"fe1.{DOMAIN}"
        )


def write_topology(root: Path, *, remote_users: bool = True, lockout: int = 10) -> list[int]:
    fe, internal, access = free_ports(3)
    doc = {
        "organisation": {"name": "Example Ltd", "sip_domains": [DOMAIN]},
        "requirements": {"users": 100, "remote_access": True},
        "sites": {"hq": {}},
        "pools": {
            "se": {"site": "hq", "edition": "standard", "members": [{
                "name": "fe1", "fqdn": f"fe1.{DOMAIN}", "address": "127.0.0.1",
                "roles": ["frontend"], "ports": {"sip_tls": fe}}]},
            "edge": {"site": "hq", "edition": "enterprise", "members": [{
                "name": "edge1", "fqdn": f"edge1.{DOMAIN}", "address": "127.0.0.1",
                "roles": ["edge"],
                "ports": {"edge_internal_tls": internal, "edge_access_tls": access},
                "edge": {
                    "internal": {"fqdn": f"edge1-int.{DOMAIN}", "address": "127.0.0.1"},
                    "external": {"fqdn": f"sip.{DOMAIN}", "address": EDGE_EXTERNAL},
                }}]},
        },
        "policies": {
            "external_access": {"remote_users": remote_users},
            "lockout": {"threshold": lockout, "duration": "10m"},
        },
    }  # fmt: skip
    (root / "topology.toml").write_text(dumps_toml(doc))
    return [fe, internal, access]


def make_deployment(root: Path, **options: object) -> EdgeDeployment:
    fe, internal, access = write_topology(root, **options)  # type: ignore[arg-type]
    conclave("topology", "provision", str(root / "topology.toml"), "--all")
    for user, password in PASSWORDS.items():
        conclave(
            "user", "add", user, "--dir", str(root / "hosts" / "fe1"), "--password-stdin",
            stdin=password + "\n",
        )  # fmt: skip
    return EdgeDeployment(root, fe, internal, access)


@pytest.fixture(scope="module")
def edge_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeDeployment]:
    """Provisioned and running: ``fe1`` (Front End) and ``edge1`` (Access Edge), shared
    by a module's tests (each uses its own clients, users' bindings and Call-IDs)."""
    deployment = make_deployment(tmp_path_factory.mktemp("edge"))
    try:
        deployment.start("fe1", "ready")
        deployment.start("edge1", "edge ready")
        yield deployment
    finally:
        for process in deployment.processes:
            if process.proc is not None and process.proc.poll() is None:
                process.stop()


def sign_in(client: SipClient, user: str, password: str | None = None) -> Response:
    """REGISTER with digest; the final response."""
    to = f"sip:{user}@{DOMAIN}"
    headers = ["Expires: 600", "Supported: path, outbound"]
    first = client.send("REGISTER", REG_URI, from_user=user, to=to, headers=headers)
    assert first.status == 401, first
    auth = digest_header(
        first, user=user, password=password or PASSWORDS[user], method="REGISTER", uri=REG_URI
    )
    return client.send("REGISTER", REG_URI, from_user=user, to=to, headers=[*headers, auth])


def send_message(client: SipClient, user: str, to_user: str, text: bytes) -> None:
    """A MESSAGE, answered 407 and sent again with credentials (its final is read later)."""
    uri = f"sip:{to_user}@{DOMAIN}"
    headers = ["Content-Type: text/plain"]
    first = client.send("MESSAGE", uri, from_user=user, headers=headers, body=text)
    assert first.status == 407, first
    auth = digest_header(first, user=user, password=PASSWORDS[user], method="MESSAGE", uri=uri)
    client.send_raw(
        client.request("MESSAGE", uri, from_user=user, headers=[*headers, auth], body=text)
    )
