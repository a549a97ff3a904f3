"""The `orch` command line (Typer): parse, call the library, render, exit with a named code.

No logic lives here. Data goes to stdout; progress, logs and errors go to stderr.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from orchestrator import __version__
from orchestrator.errors import ExitCode, InventoryError, OrchError
from orchestrator.inventory import load_inventory
from orchestrator.ops import (
    Context,
    any_reachable,
    run_plan,
    run_setup,
    run_status,
    run_teardown,
    run_trust,
)
from orchestrator.render import (
    plan_table,
    report_table,
    reports_json,
    status_table,
    to_json,
    trust_table,
)
from orchestrator.session import sudo_password_from_env

T = TypeVar("T")

app = typer.Typer(
    name="orch",
    help=(
        "Make containers on different Docker hosts talk directly on the physical network "
        "(macvlan), driven over SSH, and prove it.\n\n"
        "Typical run: `orch plan` (what would change), `orch setup` (promisc on, matching "
        "macvlan networks with per-host --ip-range slices), `orch verify` (every probe pings "
        "every other; exit 0 only when all paths work). Hosts and networks come from "
        "hosts.toml (-i). No machines? `orch lab up` builds hosts out of network namespaces."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
lab_app = typer.Typer(
    help=(
        "A local lab on this Linux machine (root): each host is a network namespace with its own "
        "sshd and dockerd, a management NIC enp0s8 and a data NIC enp0s9 on a shared bridge, like "
        "the VirtualBox lab in vagrant/. `orch lab up` writes .lab/hosts.toml for orch -i."
    ),
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")


class _State:
    inventory: Path = Path("hosts.toml")
    verbose: bool = False


STATE = _State()

HostOpt = Annotated[
    list[str] | None,
    typer.Option("--host", "-H", help="Only this host (repeatable); default: all hosts."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-new-hosts",
        help="Accept host keys seen for the first time and record them in orch's known_hosts "
        "file (never ~/.ssh/known_hosts). A changed key is always refused.",
    ),
]
AskSudoOpt = Annotated[
    bool,
    typer.Option(
        "--ask-sudo-password",
        help="Prompt for the sudo password of non-root SSH users (or set ORCH_SUDO_PASSWORD). "
        "Without it orch uses `sudo -n`, which needs passwordless sudo.",
    ),
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _fail(exc: OrchError) -> NoReturn:
    if isinstance(exc, InventoryError):
        for line in exc.problems:
            _err(f"error: {line}")
    else:
        _err(f"error: {exc}")
    raise typer.Exit(code=int(exc.exit_code))


def _context(hosts: list[str] | None, trust: bool = False, ask_sudo: bool = False) -> Context:
    try:
        inventory = load_inventory(STATE.inventory)
    except OrchError as exc:
        _fail(exc)
    try:
        inventory.select(hosts)
    except KeyError as exc:
        names = ", ".join(h.name for h in inventory.hosts)
        _err(f"error: --host {exc.args[0]}: no such host in {STATE.inventory}; hosts: {names}")
        raise typer.Exit(code=int(ExitCode.INVENTORY)) from None
    password = sudo_password_from_env()
    if ask_sudo and password is None:
        password = getpass.getpass("sudo password: ")
    return Context(
        inventory=inventory,
        selected=list(hosts or []),
        trust_new_hosts=trust,
        sudo_password=password,
        log=_err,
        verbose=STATE.verbose,
    )


def _call(fn: Callable[[Context], T], *context_args: Any) -> T:
    """Run one library call in a fresh context; Ctrl-C and orch's errors become exit codes."""
    try:
        with _context(*context_args) as ctx:
            return fn(ctx)
    except KeyboardInterrupt:
        _interrupted()
    except OrchError as exc:
        _fail(exc)


def _interrupted() -> NoReturn:
    _err("interrupted: every host finished or rolled back its current step")
    raise typer.Exit(code=int(ExitCode.INTERRUPTED))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orch {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    inventory: Annotated[
        Path,
        typer.Option(
            "--inventory",
            "-i",
            envvar="ORCH_INVENTORY",
            help="The inventory file (hosts, networks).",
        ),
    ] = Path("hosts.toml"),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every remote command and step to stderr.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """orch: cross-host macvlan networking for plain Docker hosts."""
    STATE.inventory = inventory
    STATE.verbose = verbose


@app.command()
def plan(
    host: HostOpt = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Plan replacing drifted networks.")
    ] = False,
    json_out: JsonOpt = False,
    trust: TrustOpt = False,
    ask_sudo: AskSudoOpt = False,
) -> None:
    """Show what `orch setup` would change on each host, and why. Changes nothing."""
    the_plan, observed = _call(lambda ctx: run_plan(ctx, replace), host, trust, ask_sudo)
    typer.echo(to_json(the_plan.as_dict()) if json_out else plan_table(the_plan, _color()))
    if not any_reachable(observed):
        raise typer.Exit(code=int(ExitCode.CONNECT))


@app.command()
def setup(
    host: HostOpt = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace networks that drifted from the inventory or "
            "that orch did not make (disconnects their containers).",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
    json_out: JsonOpt = False,
    trust: TrustOpt = False,
    ask_sudo: AskSudoOpt = False,
) -> None:
    """Converge every host: parent NIC up and promiscuous, macvlan networks with the same
    subnet, gateway, parent and mode, each host with its own --ip-range slice.

    Idempotent: a second run changes nothing. All hosts run in parallel; a host that fails is
    rolled back and reported, the others still converge. Exit 0 when every host converged.
    """
    if dry_run:
        plan(host=host, replace=replace, json_out=json_out, trust=trust, ask_sudo=ask_sudo)
        return
    the_plan, reports = _call(lambda ctx: run_setup(ctx, replace), host, trust, ask_sudo)
    if json_out:
        typer.echo(reports_json(the_plan, reports))
    else:
        if not the_plan.empty or the_plan.blocked:
            typer.echo(plan_table(the_plan, _color()) + "\n")
        typer.echo(report_table(reports, _color()))
    if any(r.status == "failed" for r in reports):
        raise typer.Exit(code=int(ExitCode.FAILED))


@app.command()
def status(host: HostOpt = None, json_out: JsonOpt = False, trust: TrustOpt = False) -> None:
    """Show each host's parent NIC (UP, PROMISC) and each network: absent, in sync or drift,
    with its range and attached containers. Changes nothing."""
    rows = _call(run_status, host, trust)
    if json_out:
        typer.echo(to_json({"hosts": [r.as_dict() for r in rows]}))
    else:
        typer.echo(status_table(rows, _color()))
    if not any(r.reachable for r in rows):
        raise typer.Exit(code=int(ExitCode.CONNECT))


@app.command()
def teardown(
    host: HostOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also disconnect containers that are not orch's.")
    ] = False,
    json_out: JsonOpt = False,
    trust: TrustOpt = False,
    ask_sudo: AskSudoOpt = False,
) -> None:
    """Remove the networks orch made and turn promiscuous mode back off where orch turned it on.

    Networks orch did not make are left alone. A network with containers that are not orch's
    is kept unless --force.
    """
    the_plan, reports = _call(lambda ctx: run_teardown(ctx, force), host, trust, ask_sudo)
    if json_out:
        typer.echo(reports_json(the_plan, reports))
    else:
        typer.echo(report_table(reports, _color()))
    if any(r.status == "failed" for r in reports):
        raise typer.Exit(code=int(ExitCode.FAILED))


@app.command()
def verify(
    host: HostOpt = None,
    json_out: JsonOpt = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write a JUnit XML report to this file.")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the probe containers running, for debugging.")
    ] = False,
    probe_tar: Annotated[
        Path | None,
        typer.Option(
            "--probe-tar",
            help="Load the probe image from this tar onto hosts that "
            "lack it: a `docker save` archive, or a rootfs tar (imported as the "
            "image named in [verify] image).",
        ),
    ] = None,
    trust: TrustOpt = False,
) -> None:
    """Prove connectivity: a probe container per host and network (all capabilities dropped but
    NET_RAW, read-only root), every probe pings every other, and a matrix of loss and latency
    comes out (rows = from, columns = to). Exit 0 only when every path works; hints under the
    matrix explain hosts that nothing reaches. Probes are removed afterwards, also on Ctrl-C."""
    from orchestrator.matrix import junit_xml, verify_text
    from orchestrator.verify import run_verify

    if probe_tar is not None and not probe_tar.is_file():
        _err(f"error: --probe-tar {probe_tar}: no such file")
        raise typer.Exit(code=int(ExitCode.USAGE))
    result = _call(lambda ctx: run_verify(ctx, probe_tar=probe_tar, keep=keep), host, trust)
    typer.echo(to_json(result.as_dict()) if json_out else verify_text(result, _color()))
    if junit is not None:
        try:
            junit.write_text(junit_xml(result))
        except OSError as exc:
            _err(f"error: --junit {junit}: cannot write it ({exc.strerror})")
            raise typer.Exit(code=int(ExitCode.USAGE)) from None
    if not result.ok:
        raise typer.Exit(code=int(ExitCode.FAILED))


@app.command()
def trust(host: HostOpt = None) -> None:
    """Record the SSH host keys of hosts seen for the first time in orch's known_hosts file.

    Check the printed fingerprints against the hosts (e.g. `ssh-keygen -lf
    /etc/ssh/ssh_host_ed25519_key.pub` on each). A host whose key changed is refused.
    """
    results = _call(run_trust, host, True)
    typer.echo(trust_table(results, _color()))
    if not all(r.ok for r in results):
        raise typer.Exit(code=int(ExitCode.CONNECT))


# ---------------------------------------------------------------------------- lab
LabName = Annotated[str, typer.Option("--name", help="Lab name (1-8 lower-case letters/digits).")]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where the lab writes hosts.toml, its SSH key and "
        "known_hosts (default: .lab, or .lab-NAME for another --name).",
    ),
]


def _lab(name: str, state_dir: Path | None) -> object:
    from orchestrator.lab.core import Lab

    default = Path(".lab") if name == "lab" else Path(f".lab-{name}")
    return Lab(name, state_dir or default)


@lab_app.command("up")
def lab_up(
    hosts: Annotated[int, typer.Option("--hosts", "-n", help="Number of hosts.")] = 2,
    subnet: Annotated[
        str,
        typer.Option(
            "--subnet",
            help="Management subnet (the VirtualBox host-only one by "
            "default; pick another if this machine already uses it).",
        ),
    ] = "192.168.56.0/24",
    user: Annotated[
        str,
        typer.Option(
            "--user",
            help="SSH user written to the lab inventory; a non-root user "
            "is created (in the docker group) if missing.",
        ),
    ] = "orchlab",
    sudo: Annotated[
        bool, typer.Option("--sudo/--no-sudo", help="Give a non-root --user passwordless sudo.")
    ] = True,
    name: LabName = "lab",
    state_dir: StateDir = None,
) -> None:
    """Build (or complete) the lab: N hosts, started in parallel. Idempotent."""
    from orchestrator.lab.core import Lab

    lab = _lab(name, state_dir)
    assert isinstance(lab, Lab)
    started = time.monotonic()
    try:
        state = lab.up(hosts=hosts, subnet=subnet, user=user, sudo=sudo, log=_err)
    except OrchError as exc:
        _fail(exc)
    _err(f"lab {name!r}: {len(state.hosts)} host(s) up in {time.monotonic() - started:.1f} s")
    inv = lab.inventory_path
    try:
        shown = inv.relative_to(Path.cwd())
    except ValueError:
        shown = inv
    typer.echo(f"inventory: {shown}\nnext: orch -i {shown} setup && orch -i {shown} verify")


@lab_app.command("down")
def lab_down(name: LabName = "lab", state_dir: StateDir = None) -> None:
    """Stop every process the lab started (by PID) and remove all it made."""
    from orchestrator.lab.core import Lab

    lab = _lab(name, state_dir)
    assert isinstance(lab, Lab)
    try:
        lab.down(log=_err)
    except OrchError as exc:
        _fail(exc)
    _err(f"lab {name!r}: down")


@lab_app.command("status")
def lab_status(
    name: LabName = "lab", state_dir: StateDir = None, json_out: JsonOpt = False
) -> None:
    """Show each lab host: namespace, sshd and dockerd alive or dead. Exit 1 if any is dead."""
    from tabulate import tabulate

    from orchestrator.lab.core import Lab

    lab = _lab(name, state_dir)
    assert isinstance(lab, Lab)
    try:
        rows = lab.status()
    except OrchError as exc:
        _fail(exc)
    if json_out:
        typer.echo(to_json({"name": name, "hosts": [r.__dict__ for r in rows]}))
    elif not rows:
        typer.echo(f"lab {name!r} is not up")
    else:
        typer.echo(
            tabulate(
                [
                    [
                        r.name,
                        r.address,
                        r.netns,
                        "ok" if r.netns_present else "missing",
                        "alive" if r.sshd_alive else "dead",
                        "alive" if r.dockerd_alive else "dead",
                    ]
                    for r in rows
                ],
                headers=["host", "address", "namespace", "netns", "sshd", "dockerd"],
            )
        )
    if not rows or not all(r.sshd_alive and r.dockerd_alive and r.netns_present for r in rows):
        raise typer.Exit(code=int(ExitCode.FAILED))


FaultArg = Annotated[
    str,
    typer.Argument(help="data-down | mgmt-down | docker-stop | sshd-stop | mac-filter | rekey"),
]


@lab_app.command("fault")
def lab_fault(
    host: Annotated[str, typer.Argument(help="A lab host, e.g. host2.")],
    kind: FaultArg,
    name: LabName = "lab",
    state_dir: StateDir = None,
) -> None:
    """Break one thing on one lab host, for testing: take its data or management NIC down, stop
    its dockerd or sshd, drop frames for foreign MACs at its switch port (a hypervisor NIC in
    "Deny" mode), or give it a new SSH host key."""
    from orchestrator.lab.core import Lab

    lab = _lab(name, state_dir)
    assert isinstance(lab, Lab)
    try:
        lab.fault(host, kind, on=True)
    except OrchError as exc:
        _fail(exc)


@lab_app.command("heal")
def lab_heal(
    host: Annotated[str, typer.Argument(help="A lab host, e.g. host2.")],
    kind: FaultArg,
    name: LabName = "lab",
    state_dir: StateDir = None,
) -> None:
    """Undo `orch lab fault` (for rekey: trust the new key in the lab's known_hosts)."""
    from orchestrator.lab.core import Lab

    lab = _lab(name, state_dir)
    assert isinstance(lab, Lab)
    try:
        lab.fault(host, kind, on=False)
    except OrchError as exc:
        _fail(exc)


def main() -> None:
    """Entry point of the `orch` script."""
    app()
