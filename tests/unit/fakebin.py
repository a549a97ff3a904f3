"""A fake command on PATH for tests that run orch's real shell scripts under sh."""

from __future__ import annotations

from pathlib import Path


def fake_bin(directory: Path, name: str, body: str) -> None:
    """Write an executable `name` into `directory` (put that directory first on PATH)."""
    path = directory / name
    path.write_text(body)
    path.chmod(0o755)
