"""Build the probe image's root filesystem from the local busybox-static binary.

No registry is reachable, so the probe image is a rootfs tar (`bin/busybox` plus applet links)
that `docker import` turns into an image. orch's verify can load the same tar onto a host that
lacks the image.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from orchestrator.errors import LabError

BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
APPLETS = (
    "sh",
    "ping",
    "ip",
    "sleep",
    "cat",
    "echo",
    "tail",
    "head",
    "tr",
    "grep",
    "sed",
    "awk",
    "wc",
    "ls",
    "ps",
    "hostname",
    "true",
    "false",
    "timeout",
    "kill",
    "arping",
)


def find_busybox() -> Path:
    """The busybox binary to put in the image (it must be static)."""
    for path in BUSYBOX_CANDIDATES:
        if path.is_file():
            return path
    raise LabError("busybox not found; install it with: apt-get install busybox-static")


def build_rootfs_tar(busybox: Path) -> bytes:
    """A rootfs tar with busybox and links for the applets a probe needs."""
    data = busybox.read_bytes()
    if b"GLIBC_" in data[:4096] or not _is_static(data):
        raise LabError(f"{busybox} is not statically linked; install busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def _is_static(elf: bytes) -> bool:
    # A dynamically linked ELF names its interpreter (PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2).
    return b"/ld-linux" not in elf and b"ld-musl" not in elf
