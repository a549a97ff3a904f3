"""The VirtualBox lab (vagrant/Vagrantfile) agrees with hosts.toml, and Vagrant accepts it.

The Vagrantfile is Ruby, so it is read as text: the checks below rely on its layout (the
LAB hash at the top, one `vm.network "private_network"` call per NIC, the `--nicpromisc`
customisation). If one fails after an edit, bring the Vagrantfile and hosts.toml back in
step, or adapt the parsing here if only the layout changed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from ipaddress import IPv4Network, ip_address
from pathlib import Path

import pytest

from orchestrator.inventory import load_inventory
from orchestrator.model import Inventory

ROOT = Path(__file__).resolve().parents[2]
VAGRANT_DIR = ROOT / "vagrant"
VAGRANTFILE = VAGRANT_DIR / "Vagrantfile"
INVENTORY = ROOT / "hosts.toml"

HOST_ONLY_NET = IPv4Network("192.168.56.0/24")
# VirtualBox (PIIX3 chipset) puts NIC n on PCI slot 3, 8, 9, 10, so a guest with
# predictable interface names calls them enp0s3, enp0s8, enp0s9, enp0s10.
VBOX_NIC_NAME = {1: "enp0s3", 2: "enp0s8", 3: "enp0s9", 4: "enp0s10"}
VALIDATE_TIMEOUT = 120  # seconds; `vagrant validate` takes about 2-3 s


def _ruby_code() -> str:
    """The Vagrantfile without its whole-line comments (so prose cannot match)."""
    lines = VAGRANTFILE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _lab_value(code: str, key: str) -> str:
    match = re.search(rf'^\s*{key}:\s*"([^"]*)"', code, re.MULTILINE)
    assert match, f'Vagrantfile: no `{key}: "..."` entry in the LAB hash'
    return match.group(1)


def _lab_hosts(code: str) -> dict[str, dict[str, str]]:
    """LAB[:hosts] as {name: {field: value}}, from entries like `{ name: "host1", ... }`."""
    hosts: dict[str, dict[str, str]] = {}
    for entry in re.finditer(r"\{\s*(name:[^{}]*)\}", code):
        fields = dict(re.findall(r'(\w+):\s*"([^"]*)"', entry.group(1)))
        assert fields["name"] not in hosts, f"Vagrantfile: host {fields['name']} defined twice"
        hosts[fields["name"]] = fields
    assert hosts, "Vagrantfile: found no `{ name: ..., ip: ... }` entries in LAB[:hosts]"
    return hosts


def _private_networks(code: str) -> list[str]:
    """Each `vm.network "private_network", ...` call, continuation lines joined."""
    calls: list[str] = []
    current: str | None = None
    for line in code.splitlines():
        if current is None and re.search(r'\.vm\.network\s+"private_network"', line):
            current = ""
        if current is not None:
            current += " " + line.strip()
            if not line.rstrip().endswith(","):
                calls.append(current)
                current = None
    return calls


def _adapter(call: str) -> int:
    match = re.search(r"\badapter:\s*(\d+)", call)
    assert match, f"Vagrantfile: give this network a fixed `adapter:` slot: {call.strip()}"
    return int(match.group(1))


def _host_only_network(code: str) -> str:
    calls = [c for c in _private_networks(code) if "intnet" not in c and "ip:" in c]
    assert len(calls) == 1, f"Vagrantfile: expected one host-only private_network, got {calls}"
    return calls[0]


def _macvlan_network(code: str) -> str:
    calls = [c for c in _private_networks(code) if "virtualbox__intnet:" in c]
    assert len(calls) == 1, f"Vagrantfile: expected one internal network (NIC 3), got {calls}"
    return calls[0]


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return load_inventory(INVENTORY)


@pytest.fixture(scope="module")
def code() -> str:
    return _ruby_code()


def test_hosts_and_addresses_match(code: str, inventory: Inventory) -> None:
    vagrant = {name: fields.get("ip") for name, fields in _lab_hosts(code).items()}
    toml = {host.name: host.address for host in inventory.hosts}
    assert vagrant == toml, (
        f"hosts differ: Vagrantfile LAB[:hosts] has {vagrant}, hosts.toml has {toml}"
    )
    for name, address in toml.items():
        assert ip_address(address) in HOST_ONLY_NET, (
            f"{name}: {address} is not on VirtualBox's host-only network {HOST_ONLY_NET}"
        )


def test_host_only_nic_is_enp0s8(code: str) -> None:
    call = _host_only_network(code)
    adapter = _adapter(call)
    assert adapter == 2, f"the host-only network must be NIC 2, the Vagrantfile says {adapter}"
    assert "ip: host[:ip]" in call, f"the host-only NIC must get LAB's address: {call.strip()}"
    assert _lab_value(code, "hostonly_nic") == VBOX_NIC_NAME[adapter] == "enp0s8"


def test_macvlan_nic_is_the_inventory_parent(code: str, inventory: Inventory) -> None:
    call = _macvlan_network(code)
    adapter = _adapter(call)
    nic = _lab_value(code, "macvlan_nic")
    assert nic == VBOX_NIC_NAME.get(adapter), (
        f"LAB[:macvlan_nic] is {nic}, but VirtualBox NIC {adapter} is {VBOX_NIC_NAME.get(adapter)}"
    )
    assert "auto_config: false" in call and " ip:" not in call, (
        f"the macvlan NIC must have no address (auto_config: false, no ip:): {call.strip()}"
    )
    for host in inventory.hosts:
        assert host.parent == nic, (
            f"hosts.toml: {host.name} has parent {host.parent}, the Vagrantfile's macvlan NIC "
            f"is {nic}"
        )
    for net in inventory.networks:
        if net.parent is not None:
            assert net.parent.split(".")[0] == nic, (
                f"hosts.toml: network {net.name} has parent {net.parent}, not {nic}[.VLAN]"
            )


def test_macvlan_nic_is_promiscuous_allow_all(code: str) -> None:
    adapter = _adapter(_macvlan_network(code))
    promisc = dict(re.findall(r'"--nicpromisc(\d+)",\s*"([\w-]+)"', code))
    assert promisc.get(str(adapter)) == "allow-all", (
        f'the macvlan NIC is adapter {adapter}: the Vagrantfile needs vb.customize ["modifyvm", '
        f':id, "--nicpromisc{adapter}", "allow-all"] (found {promisc}); without it frames for '
        "the containers' MACs are dropped"
    )


def test_fixed_macs_are_distinct(code: str) -> None:
    macs = [
        fields.get(key, "")
        for fields in _lab_hosts(code).values()
        for key in ("hostonly_mac", "macvlan_mac")
    ]
    for mac in macs:
        assert re.fullmatch(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}", mac), (
            f"not a lower-case MAC: {mac!r}"
        )
        assert int(mac[:2], 16) & 1 == 0, f"{mac} is a multicast MAC"
    assert len(set(macs)) == len(macs), f"MACs in LAB[:hosts] must be distinct: {macs}"


def test_ssh_settings_match(code: str, inventory: Inventory) -> None:
    assert re.search(r"^\s*config\.ssh\.insert_key\s*=\s*false\b", code, re.MULTILINE), (
        "hosts.toml uses Vagrant's insecure key: the Vagrantfile must keep "
        "config.ssh.insert_key = false"
    )
    insecure_key = Path("~/.vagrant.d/insecure_private_key").expanduser()
    for host in inventory.hosts:
        assert host.identity_file == insecure_key, (
            f"hosts.toml: {host.name} uses {host.identity_file}, not {insecure_key}"
        )
    known_hosts = (INVENTORY.parent / inventory.ssh.known_hosts).resolve()
    assert known_hosts.is_relative_to(VAGRANT_DIR / ".vagrant"), (
        f"[ssh] known_hosts {known_hosts} should live in vagrant/.vagrant/ (git-ignored)"
    )
    gitignore = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "vagrant/.vagrant/" in gitignore, ".gitignore must list vagrant/.vagrant/"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def test_vagrant_validate(tmp_path: Path) -> None:
    """`vagrant validate` accepts the Vagrantfile, with or without VirtualBox installed.

    Without VirtualBox the virtualbox provider is unusable and plain `validate` fails, so
    `--ignore-provider` is added: everything but the `vb.*` settings is still validated.
    VAGRANT_DEFAULT_PROVIDER pins the provider (a locally installed libvirt plugin would
    otherwise be chosen); VAGRANT_HOME and VAGRANT_DOTFILE_PATH keep Vagrant's state out of
    ~/.vagrant.d and vagrant/.vagrant.
    """
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        if _ci():
            pytest.fail(
                "vagrant is not installed but CI is set; install it (apt-get install vagrant)"
            )
        pytest.skip("vagrant is not installed (with CI=true this test fails instead)")
    env = {k: v for k, v in os.environ.items() if k not in ("VAGRANT_CWD", "VAGRANT_VAGRANTFILE")}
    env.update(
        VAGRANT_HOME=str(tmp_path / "vagrant.d"),
        VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"),
        VAGRANT_DEFAULT_PROVIDER="virtualbox",
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_NO_COLOR="1",
    )
    cmd = [vagrant, "validate"]
    if shutil.which("VBoxManage") is None:
        cmd.append("--ignore-provider")
    local_state = VAGRANT_DIR / ".vagrant"
    had_local_state = local_state.exists()
    try:
        result = subprocess.run(
            cmd,
            cwd=VAGRANT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=VALIDATE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd)} did not finish within {VALIDATE_TIMEOUT} s")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{output}"
    assert "validated successfully" in output, output
    assert local_state.exists() == had_local_state, "vagrant validate created vagrant/.vagrant"
