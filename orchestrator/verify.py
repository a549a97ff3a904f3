"""`orch verify`: start a probe per host and network, ping every other probe, clean up.

Phases, each all hosts at once: (1) remove probes left by an interrupted run, make sure the probe
image is there (load it from a tar if asked), start the probes and attach to their stdin; (2) once
every address is known, send each probe its ping script (all targets at once) and read the output
from the same attach stream; (3) end the probes with one more line on that stream (SIGKILL for
the others: failure, Ctrl-C) and wait until the engine has removed them; (4) only when something
failed: observe the hosts (as `orch setup` does) to explain the failures in hints.

Why attach rather than `docker exec` and `docker kill`: the probe's PID 1 reads its script from
stdin (see matrix.probe_command), so the ping phase starts no process in the container and the
probe ends by itself; on this machine that took 0.15-0.3 s off a verify (2 and 8 hosts).
"""

from __future__ import annotations

import contextlib
import io
import secrets
import struct
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import paramiko

from orchestrator.apply import observe_host
from orchestrator.errors import OrchError
from orchestrator.matrix import (
    END_MARK,
    HostDiagnosis,
    NetworkMatrix,
    PingResult,
    Probe,
    VerifyResult,
    build_matrix,
    parse_ping_output,
    ping_deadline,
    ping_script,
    probe_command,
)
from orchestrator.model import LABEL_NETWORK, LABEL_PROBE, Host
from orchestrator.ops import Context
from orchestrator.parallel import for_each
from orchestrator.plan import network_state
from orchestrator.session import HostSession
from orchestrator.state import HostState, promisc_nic

PROBE_LIFETIME_S = 600  # a probe that escapes cleanup ends by itself
# Attach streams held open per host from probe start to cleanup (one per network). sshd's
# MaxSessions (10 by default) counts them with the API and shell channels; probes of further
# networks are attached when their turn to ping comes, one at a time, and killed at cleanup.
ATTACH_AHEAD = 4
# What opening or using an attach stream can raise: the engine's refusal, a channel that sshd
# refuses (MaxSessions) or a connection that broke.
STREAM_ERRORS = (docker.errors.DockerException, OSError, paramiko.SSHException)


def _split_image(ref: str) -> tuple[str, str]:
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def load_image(client: docker.DockerClient, image: str, tar: Path) -> None:
    """Load `tar` onto an engine: a `docker save` archive, or a rootfs tar to import as `image`."""
    data = tar.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = set(archive.getnames())
    if "manifest.json" in names:
        client.api.load_image(data)
    else:
        repo, tag = _split_image(image)
        client.api.import_image_from_data(data, repository=repo, tag=tag)


class _HostRun:
    """Probes of one host in one verify run."""

    def __init__(self, ctx: Context, host: Host, run_id: str, probe_tar: Path | None) -> None:
        self.ctx = ctx
        self.host = host
        self.session: HostSession = ctx.session(host)
        self.run_id = run_id
        self.probe_tar = probe_tar
        self.connected = False
        self.state: HostState | None = None
        self.client: docker.DockerClient | None = None
        self.probes: dict[str, Probe] = {}
        self.containers: dict[str, str] = {}  # network -> container id
        self.streams: dict[str, Any] = {}  # network -> attach stream (a paramiko channel)
        self.pinged: set[str] = set()  # networks whose probe ran its script to the end
        self.warmer: threading.Thread | None = None
        self.error = ""
        self.observe_error = ""
        self.docker_error = ""
        self.left: list[str] = []  # probes that could not be removed

    def start(self) -> None:
        """Connect and start this host's probes."""
        self.session.connect()
        self.connected = True
        self._start_probes()

    def observe(self) -> None:
        """Observe the host for hints (only where the connection opened: no second wait)."""
        if not self.connected:
            return
        try:
            self.state = observe_host(self.session, self.ctx.inventory)
        except Exception as exc:  # a thread must not die with a traceback: keep the reason
            self.observe_error = str(exc).removeprefix(f"{self.host.name}: ") or repr(exc)

    def _start_probes(self) -> None:
        try:
            # "auto": the engine's version comes with the first request, so no extra round trip.
            client = self.client = self.session.docker("auto")
            leftovers = client.api.containers(all=True, filters={"label": LABEL_PROBE}, quiet=True)
        except Exception as exc:  # the engine (or dial-stdio) does not answer; see failure()
            self.client = None
            self.docker_error = _docker_text(exc)
            return
        for c in leftovers:  # left by an interrupted run
            _remove(client, c["Id"])
        image = self.ctx.inventory.verify.image
        try:
            client.api.inspect_image(image)
        except docker.errors.NotFound:
            if self.probe_tar is None:
                self.error = (
                    f"probe image {image} is not on this host and orch does not pull; "
                    "load it with --probe-tar FILE (a `docker save` archive or a "
                    "rootfs tar) or `docker pull` it there"
                )
                return
            self.session.log(f"loading {self.probe_tar} as {image}")
            load_image(client, image, self.probe_tar)
        for spec in self.ctx.inventory.networks:
            if self.ctx.cancel.is_set():
                return
            try:
                self.probes[spec.name] = self._start_probe(client, spec.name, image)
            except docker.errors.DockerException as exc:
                text = _docker_text(exc)
                if "not found" in text and spec.name in text:
                    text = f"network {spec.name} is missing"
                self.probes[spec.name] = Probe(self.host.name, spec.name, error=text)

    def failure(self) -> str:
        """Why this host has no probe at all ("" if it got that far), in the observation's
        clearer words where there is one."""
        if self.error or self.client is not None:
            return self.error
        state = self.state
        if state is not None and state.docker_api is None:
            return f"Docker engine does not answer: {state.docker_error}"
        if state is None and self.observe_error:
            return self.observe_error
        return f"Docker engine does not answer: {self.docker_error}"

    def _start_probe(self, client: docker.DockerClient, network: str, image: str) -> Probe:
        name = f"orch-probe-{network[:40]}-{self.run_id}"  # the run id is never cut off
        api = client.api
        host_config = api.create_host_config(
            cap_drop=["ALL"],
            cap_add=["NET_RAW"],
            read_only=True,
            auto_remove=True,  # gone once it exits: after cleanup, or its lifetime with --keep
            network_mode=network,
        )
        container = api.create_container(
            image,
            command=probe_command(PROBE_LIFETIME_S),
            stdin_open=True,  # the ping script arrives on stdin
            detach=True,  # stdin stays open when an attach ends (--keep: the probe stays up)
            name=name,
            labels={LABEL_PROBE: "true", LABEL_NETWORK: network},
            host_config=host_config,
            hostname=f"probe-{self.host.name}"[:63],
            network_disabled=False,
        )
        cid = container["Id"]
        try:
            api.start(cid)
        except Exception:
            # auto-remove applies only to a started container: remove this one now.
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)
            raise
        self.containers[network] = cid
        info: dict[str, Any] = api.inspect_container(cid)
        nets = info.get("NetworkSettings", {}).get("Networks", {}) or {}
        ip = str((nets.get(network) or {}).get("IPAddress", ""))
        self.session.log(f"probe {name} on {network} at {ip}")
        if not ip:
            return Probe(self.host.name, network, error="probe got no address")
        if len(self.streams) < ATTACH_AHEAD:
            with contextlib.suppress(*STREAM_ERRORS):  # refused now: attached when it pings
                self.streams[network] = _attach(client, cid)
        return Probe(self.host.name, network, ip=ip)

    def ping(
        self, targets: dict[str, list[str]], warm: bool = True
    ) -> dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str]:
        """network -> parsed ping output of this host's probe (or why there is none).

        With `warm`, a fresh API connection is opened for cleanup while the pings run (the
        attach streams took the open ones), so that removing the probes does not wait for it.
        """
        out: dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str] = {}
        client = self.client
        if client is None or not any(targets.values()):
            return out
        if warm:
            self.warmer = threading.Thread(target=_warm, args=(client,), daemon=True)
            self.warmer.start()
        settings = self.ctx.inventory.verify
        # The inventory guarantees that the pings end well within the command timeout.
        limit = max(self.ctx.inventory.ssh.command_timeout, ping_deadline(settings) + 2.0)
        for network, ips in targets.items():
            cid = self.containers.get(network)
            probe = self.probes.get(network)
            if cid is None or probe is None or not probe.ok or not ips:
                continue
            script = ping_script(ips, settings)
            held = self.streams.get(network)
            try:
                stream = held or _attach(client, cid)
            except STREAM_ERRORS as exc:
                out[network] = f"could not attach to the probe: {self._stream_error(exc)}"
                continue
            try:
                text = _converse(stream, script, limit)
            except STREAM_ERRORS as exc:
                out[network] = f"no answer from the probe: {self._stream_error(exc)}"
                self.streams.pop(network, None)  # the probe is killed at cleanup
                continue
            else:
                if held is not None:
                    self.pinged.add(network)  # cleanup ends it with its last line
                out[network] = parse_ping_output(text)
            finally:
                if network not in self.streams:  # attached for this ping only, or broken
                    _close(stream)
        return out

    def _stream_error(self, exc: Exception) -> str:
        """Why a stream failed, naming the SSH connection when that is what broke."""
        reason = _docker_text(exc) or type(exc).__name__
        # paramiko closes a dead connection's channels a moment before it marks it inactive
        settle = time.monotonic() + 0.2
        while self.session.is_open and time.monotonic() < settle:
            time.sleep(0.01)
        if not self.session.is_open:
            return f"the SSH connection to the host broke ({reason})"
        return reason

    def cleanup(self) -> None:
        """End this host's probes (only after every probe has pinged them) and wait until the
        engine has removed them (they were created with auto-remove). What cannot be removed
        (the host stopped answering) is reported in `left`."""
        if self.warmer is not None:
            self.warmer.join(timeout=1.0)  # a request of a few ms, begun before the pings
        ended = set()
        for network in self.pinged:
            with contextlib.suppress(OSError):  # then it is killed below
                self.streams[network].sendall(b"\n")  # the probe's last `read`: it exits
                ended.add(network)
        self.pinged.clear()
        try:
            self._remove_probes(ended)
        finally:
            for stream in self.streams.values():
                _close(stream)
            self.streams.clear()

    def _remove_probes(self, ended: set[str]) -> None:
        if self.client is None:
            return
        api = self.client.api
        for network, cid in self.containers.items():
            if network in ended:
                continue
            with contextlib.suppress(Exception):  # not running any more, or no answer: see below
                api.kill(cid)
        for network, cid in self.containers.items():
            try:
                api.wait(cid, timeout=15, condition="removed")
            except docker.errors.NotFound:
                continue
            except Exception:  # a wait that fails: remove it by force instead
                try:
                    _remove(self.client, cid)
                except Exception as exc:
                    self.left.append(
                        f"{self.host.name}: probe on {network} ({cid[:12]}) could not be removed "
                        f"({_docker_text(exc)[:120]}); it ends by itself within "
                        f"{PROBE_LIFETIME_S // 60} min, and the next verify removes it"
                    )
        self.containers.clear()


def _attach(client: docker.DockerClient, cid: str) -> Any:
    """The container's stdin, stdout and stderr as one stream: a paramiko channel, since orch's
    Docker traffic always rides the session's SSH transport (dockerlink.py)."""
    return client.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})


def _converse(stream: Any, script: str, limit_s: float) -> str:
    """Send `script` as one line; return the probe's output up to END_MARK.

    Raises:
        TimeoutError: no END_MARK within `limit_s` seconds.
        ConnectionError: the stream ended before END_MARK (the probe or its engine stopped).
        OSError, paramiko.SSHException: the stream broke.
    """
    deadline = time.monotonic() + limit_s
    stream.settimeout(limit_s)
    stream.sendall(script.encode() + b"\n")
    buf = b""
    out = b""
    while END_MARK.encode() not in out:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            stream.settimeout(remaining)
            chunk = stream.recv(65536)
        except TimeoutError:  # a channel's own timeout has no message
            raise TimeoutError(f"nothing came within {limit_s:g} s") from None
        if not chunk:
            raise ConnectionError("its stream ended before the answer did")
        buf += chunk
        frames, buf = demux(buf)
        out += b"".join(data for _kind, data in frames)
    return out.decode(errors="replace")


def demux(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split Docker's multiplexed stream (no TTY) into (stream, data) frames, 1 = stdout and
    2 = stderr; return them and the bytes of an incomplete frame."""
    frames = []
    while len(buf) >= 8:
        kind, size = struct.unpack(">BxxxL", buf[:8])
        if len(buf) < 8 + size:
            break
        frames.append((kind, buf[8 : 8 + size]))
        buf = buf[8 + size :]
    return frames, buf


def _close(stream: Any) -> None:
    with contextlib.suppress(Exception):
        stream.close()


def _warm(client: docker.DockerClient) -> None:
    with contextlib.suppress(Exception):  # only an optimisation; cleanup opens its own if need be
        client.api.ping()


def _docker_text(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _remove(client: docker.DockerClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_container(ref, force=True)


def run_verify(ctx: Context, probe_tar: Path | None = None, keep: bool = False) -> VerifyResult:
    """Probe every selected host on every inventory network and build the matrices."""
    started = time.monotonic()
    run_id = secrets.token_hex(4)
    hosts = ctx.hosts
    runs = {h.name: _HostRun(ctx, h, run_id, probe_tar) for h in hosts}
    errors: list[str] = []
    try:
        started_ = for_each(
            hosts, lambda h: runs[h.name].start(), cancel=ctx.cancel, name=lambda h: h.name
        )
        for h, r in started_.items():
            if isinstance(r, OrchError):
                runs[h.name].error = str(r).removeprefix(f"{h.name}: ")
        targets = {
            spec.name: {
                n: run.probes[spec.name].ip
                for n, run in runs.items()
                if spec.name in run.probes and run.probes[spec.name].ok
            }
            for spec in ctx.inventory.networks
        }

        def ping(h: Host) -> dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str]:
            mine = {
                net: [ip for other, ip in t.items() if other != h.name]
                for net, t in targets.items()
            }
            return runs[h.name].ping(mine, warm=not keep)

        pinged = for_each(hosts, ping, cancel=ctx.cancel, name=lambda h: h.name)
    finally:
        if not keep:
            for_each(list(runs.values()), lambda r: r.cleanup(), name=lambda r: r.host.name)
    errors.extend(line for run in runs.values() for line in run.left)
    result = _result(ctx, runs, pinged, {}, started, errors)
    if result.ok or ctx.cancel.is_set():
        return result
    # Something failed: observe the hosts (all at once, as setup does) to explain it in hints.
    for_each(
        list(runs.values()), lambda r: r.observe(), cancel=ctx.cancel, name=lambda r: r.host.name
    )
    observed = {n: r.state for n, r in runs.items() if r.state is not None}
    return _result(ctx, runs, pinged, _diagnose(ctx, runs, observed), started, errors)


def _result(
    ctx: Context,
    runs: dict[str, _HostRun],
    pinged: dict[Host, dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str] | OrchError],
    diagnosis: dict[str, dict[str, HostDiagnosis]],
    started: float,
    errors: list[str],
) -> VerifyResult:
    hosts = ctx.hosts
    names = [h.name for h in hosts]
    matrices: list[NetworkMatrix] = []
    for spec in ctx.inventory.networks:
        probes: dict[str, Probe] = {}
        pings: dict[str, tuple[dict[str, PingResult], dict[str, bool]] | str] = {}
        for h in hosts:
            run = runs[h.name]
            failure = run.failure()
            if failure:
                probes[h.name] = Probe(h.name, spec.name, error=failure)
                continue
            probes[h.name] = run.probes.get(
                spec.name, Probe(h.name, spec.name, error="not started")
            )
            result = pinged.get(h)
            if isinstance(result, OrchError):
                pings[h.name] = str(result)
            elif result is not None and spec.name in result:
                pings[h.name] = result[spec.name]
        matrices.append(build_matrix(spec.name, names, probes, pings, diagnosis.get(spec.name)))
    return VerifyResult(tuple(matrices), time.monotonic() - started, tuple(errors))


def _diagnose(
    ctx: Context, runs: dict[str, _HostRun], observed: dict[str, HostState]
) -> dict[str, dict[str, HostDiagnosis]]:
    """network -> host -> facts that explain a failing row or column."""
    everyone: dict[str, HostState | OrchError] = {
        h.name: OrchError("not observed") for h in ctx.inventory.hosts
    }
    everyone.update(observed)
    out: dict[str, dict[str, HostDiagnosis]] = {}
    for spec in ctx.inventory.networks:
        per: dict[str, HostDiagnosis] = {}
        for h in ctx.hosts:
            run = runs[h.name]
            state = observed.get(h.name)
            if state is None or state.docker_api is None:
                # run.error already starts with "Docker engine does not answer"; the hint says so
                why = (state.docker_error if state is not None else "") or run.failure()
                per[h.name] = HostDiagnosis(
                    docker_ok=False, docker_error=why or "no answer", reachable=state is not None
                )
                continue
            nic = promisc_nic(spec.parent_for(h))
            link = state.links.get(nic)
            net = state.networks.get(spec.name)
            try:
                word, _detail = network_state(ctx.inventory, everyone, h, spec)
            except OrchError:
                word = "in sync" if net is not None else "absent"
            per[h.name] = HostDiagnosis(
                network_state=word,
                nic=nic,
                nic_exists=link is not None,
                nic_up=bool(link and link.up and link.lower_up),
                nic_promisc=bool(link and link.promisc),
            )
        out[spec.name] = per
    return out
