"""The docker SDK riding on a host session's SSH transport (imported only when needed).

docker-py's own ssh:// transport would open a second SSH connection under its own rules (only
~/.ssh/known_hosts, no timeouts). Here its SSH adapter adopts the Fabric connection of the
session instead: each API connection is a channel running `docker system dial-stdio` on the host.
"""

from __future__ import annotations

from typing import Any

import docker
from docker.transport import SSHHTTPAdapter
from fabric import Connection

MIN_API_VERSION = "1.24"  # docker-py's minimum; only a placeholder until the engine answers
# Channels per host for Docker API traffic. sshd's MaxSessions (10 by default) counts every open
# channel of a connection: keep docker's share small so that shell commands always find a slot.
DOCKER_POOLS = 1
DOCKER_POOL_SIZE = 4


class _SharedTransportAdapter(SSHHTTPAdapter):  # type: ignore[misc]
    """docker-py's SSH adapter, riding on an already open Fabric connection.

    Relies on docker-py internals that are stable across docker 7.x (pinned in pyproject.toml);
    `tests/unit/test_session.py` guards them.
    """

    def __init__(self, cxn: Connection, timeout: float) -> None:
        self._cxn = cxn
        super().__init__(
            "ssh://shared",
            timeout=timeout,
            pool_connections=DOCKER_POOLS,
            max_pool_size=DOCKER_POOL_SIZE,
            shell_out=False,
        )

    def _create_paramiko_client(self, base_url: str) -> None:
        self._cxn.open()
        self.ssh_client = self._cxn.client
        self.ssh_params: dict[str, Any] = {}

    def _connect(self) -> None:
        self._cxn.open()

    def get_connection(self, url: str, proxies: object = None) -> Any:
        # docker-py keys pools by the full URL, so every new path opens another channel (and
        # spawns another `docker system dial-stdio` on the host). One pool serves every path
        # here, so that keep-alive connections are reused across requests.
        return super().get_connection("http+docker://ssh/", proxies)

    def close(self) -> None:
        # Close our channels only; the Fabric connection belongs to the session.
        self.pools.clear()


def docker_client(cxn: Connection, api_version: str, timeout: float) -> docker.DockerClient:
    """A DockerClient whose requests travel as channels of the open connection `cxn`.

    Args:
        cxn: an open Fabric connection (host key already verified).
        api_version: the engine's API version, or "auto" to ask it with the first request.
        timeout: seconds per request.
    """
    client = docker.DockerClient(
        base_url="tcp://127.0.0.1:9",  # never used: replaced by the adapter below (no I/O)
        version=MIN_API_VERSION if api_version == "auto" else api_version,
        timeout=int(timeout),
    )
    adapter = _SharedTransportAdapter(cxn, timeout=timeout)
    api = client.api
    api._custom_adapter = adapter
    api.mount("http+docker://ssh", adapter)
    api._unmount("http://", "https://")
    api.base_url = "http+docker://ssh"
    if api_version == "auto":
        api._version = str(api.version(api_version=False)["ApiVersion"])
    return client
