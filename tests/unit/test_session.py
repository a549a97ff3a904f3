"""HostSession's seams: host-key helpers and policies, and the docker-py internals that the shared
SSH transport adapter relies on (no network: a fake Fabric connection around an unconnected
paramiko client)."""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from docker.api.client import APIClient
from docker.transport import SSHHTTPAdapter

from orchestrator.dockerlink import DOCKER_POOL_SIZE, DOCKER_POOLS, _SharedTransportAdapter
from orchestrator.errors import ConnectError, HostKeyError
from orchestrator.model import Host, SSHSettings
from orchestrator.session import (
    HostSession,
    _RejectUnknown,
    _TrustOnFirstUse,
    fingerprint,
    known_hosts_name,
)

# A fixed key and the fingerprint `ssh-keygen -lf` prints for it.
FIXED_PUB = "AAAAC3NzaC1lZDI1NTE5AAAAINEIBXnH+b8ViY17BShOfciyqU8/ajronWLUDb1TmU16"
FIXED_FP = "SHA256:U1zRtdYhAG+opXgl+7MCXFzBu2eV14pfyRot/9o/pkY"
HOST = Host(name="host1", address="127.0.0.1", user="vagrant", port=2222)


def fixed_key() -> paramiko.PKey:
    return paramiko.Ed25519Key(data=base64.b64decode(FIXED_PUB))


def generated_key() -> paramiko.PKey:
    public = Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return paramiko.Ed25519Key(data=base64.b64decode(line.split()[1]))


# --- host keys -----------------------------------------------------------------------------------


def test_fingerprint_matches_ssh_keygen() -> None:
    assert fingerprint(fixed_key()) == FIXED_FP


def test_fingerprint_of_a_generated_key() -> None:
    key = generated_key()
    fp = fingerprint(key)
    assert re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", fp), fp  # 32 bytes, no "=" padding
    digest = base64.b64decode(fp.removeprefix("SHA256:") + "=")
    assert digest == hashlib.sha256(key.asbytes()).digest()
    assert fingerprint(generated_key()) != fp


@pytest.mark.parametrize(
    ("address", "port", "name"),
    [
        ("192.168.56.101", 22, "192.168.56.101"),
        ("192.168.56.101", 2222, "[192.168.56.101]:2222"),
        ("host1.example.org", 22, "host1.example.org"),
        ("host1.example.org", 2222, "[host1.example.org]:2222"),
    ],
)
def test_known_hosts_name(address: str, port: int, name: str) -> None:
    assert known_hosts_name(address, port) == name


def test_reject_unknown_names_the_key_and_orch_trust(tmp_path: Path) -> None:
    policy = _RejectUnknown(HOST, tmp_path / "known_hosts")
    client = paramiko.SSHClient()
    with pytest.raises(HostKeyError) as info:
        policy.missing_host_key(client, "[127.0.0.1]:2222", fixed_key())
    message = str(info.value)
    assert message.startswith("host1: unknown SSH host key for [127.0.0.1]:2222")
    assert f"ssh-ed25519 {FIXED_FP}" in message
    assert "orch trust --host host1" in message
    assert str(tmp_path / "known_hosts") in message
    assert "--trust-new-hosts" in message
    assert isinstance(info.value, ConnectError)  # exit code CONNECT
    assert "\n" not in message


def test_trust_on_first_use_records_the_key_in_orchs_file(tmp_path: Path) -> None:
    known = tmp_path / "sub" / "known_hosts"
    logged: list[str] = []
    policy = _TrustOnFirstUse(HOST, known, logged.append)
    client = paramiko.SSHClient()
    name = known_hosts_name(HOST.address, 2222)
    policy.missing_host_key(client, name, fixed_key())
    assert known.read_text() == f"{name} ssh-ed25519 {FIXED_PUB}\n"
    # paramiko reads back what was written, under the name it looks up
    stored = paramiko.HostKeys(str(known)).lookup(name)
    assert stored is not None and stored["ssh-ed25519"].get_base64() == FIXED_PUB
    assert client.get_host_keys().lookup(name) is not None
    (line,) = logged
    assert FIXED_FP in line and str(known) in line
    # a second key appends
    policy.missing_host_key(client, "other", generated_key())
    assert len(known.read_text().splitlines()) == 2


# --- docker-py internals -------------------------------------------------------------------------


def test_docker_sdk_is_version_7() -> None:
    assert docker.__version__.split(".")[0] == "7"


def test_docker_private_api_still_exists() -> None:
    for name in ("_create_paramiko_client", "_connect", "get_connection", "close"):
        assert callable(getattr(SSHHTTPAdapter, name, None)), name
    params = inspect.signature(SSHHTTPAdapter.__init__).parameters
    assert {"base_url", "timeout", "pool_connections", "max_pool_size", "shell_out"} <= set(params)
    init = inspect.getsource(SSHHTTPAdapter.__init__)
    assert "self._create_paramiko_client(base_url)" in init
    assert "self._connect()" in init
    assert "self.pools" in init
    get_conn = inspect.getsource(SSHHTTPAdapter.get_connection)
    assert "self.pools" in get_conn and "self.ssh_client" in get_conn
    assert callable(getattr(APIClient, "_unmount", None))
    assert "self._custom_adapter" in inspect.getsource(APIClient.get_adapter)
    api = APIClient(base_url="tcp://127.0.0.1:9", version="1.41")  # no I/O with a fixed version
    assert api.base_url == "http://127.0.0.1:9"
    assert "http://" in api.adapters and "https://" in api.adapters


class FakeClient(paramiko.SSHClient):
    """An SSHClient that never connects and counts close()."""

    closes = 0

    def close(self) -> None:
        self.closes += 1
        super().close()


class FakeConnection:
    """The parts of fabric.Connection the adapter uses."""

    def __init__(self) -> None:
        self.client = FakeClient()
        self.opens = 0
        self.closes = 0

    def open(self) -> None:
        self.opens += 1

    def close(self) -> None:
        self.closes += 1


def test_shared_adapter_uses_the_connection_and_one_pool() -> None:
    cxn = FakeConnection()
    adapter = _SharedTransportAdapter(cxn, timeout=5)
    assert cxn.opens >= 1
    assert adapter.ssh_client is cxn.client
    assert adapter.timeout == 5
    assert adapter.max_pool_size == DOCKER_POOL_SIZE
    pool = adapter.get_connection("http+docker://ssh/v1.45/networks/create")
    again = adapter.get_connection("http+docker://ssh/v1.45/containers/json?all=1")
    assert pool is again
    assert pool.pool.maxsize == DOCKER_POOL_SIZE
    assert len(adapter.pools) == 1 <= DOCKER_POOLS
    # requests >= 2.32.2 asks through get_connection_with_tls_context
    request = SimpleNamespace(url="http+docker://ssh/v1.45/version")
    assert adapter.get_connection_with_tls_context(request, True) is pool


def test_shared_adapter_close_keeps_the_connection_open() -> None:
    cxn = FakeConnection()
    adapter = _SharedTransportAdapter(cxn, timeout=5)
    adapter.get_connection("http+docker://ssh/v1.45/version")
    adapter.close()
    assert len(adapter.pools) == 0
    assert cxn.closes == 0
    assert cxn.client.closes == 0
    # a closed adapter can serve again (a new pool over the same connection)
    assert adapter.get_connection("http+docker://ssh/v1.45/version") is not None


def test_session_docker_client_rides_on_the_session(tmp_path: Path) -> None:
    session = HostSession(HOST, SSHSettings(known_hosts=tmp_path / "known_hosts"))
    cxn = FakeConnection()
    session._cxn = cxn  # as if connect() had succeeded
    client = session.docker("1.45")
    assert session.docker("1.45") is client  # one client per session
    api: Any = client.api
    assert api.api_version == "1.45"
    assert api.base_url == "http+docker://ssh"
    adapter = api.get_adapter("http+docker://ssh/v1.45/networks")
    assert isinstance(adapter, _SharedTransportAdapter)
    assert api._custom_adapter is adapter
    assert "http://" not in api.adapters and "https://" not in api.adapters
    assert api._url("/networks/{0}", "mac_net1") == "http+docker://ssh/v1.45/networks/mac_net1"
    client.close()
    assert cxn.closes == 0 and cxn.client.closes == 0  # docker does not close the session's SSH
    session.close()
    assert cxn.closes == 1  # the session closes its connection (and paramiko client) once
    session.close()  # idempotent
    assert cxn.closes == 1
