"""Run the orch CLI so that it stops itself (SIGSTOP) right after it first logs a line containing
a marker: a deterministic point mid-run for the safety tests (see `Interrupted` in test_safety.py).

    python -m tests.lab.freeze MARKER [orch arguments...]

Only the CLI's stderr logger is wrapped; everything else is the real orch. Stopping from inside
means the thread that logged the line cannot take its next step before the test acts (a stop
sent from outside, after the test has read the line, can come too late on a busy machine).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from orchestrator import cli


def main() -> None:
    marker, args = sys.argv[1], sys.argv[2:]
    log = cli._err
    lock = threading.Lock()
    matched: list[str] = []

    def err(message: str) -> None:
        log(message)
        if marker not in message:
            return
        with lock:  # the first match only: two hosts may log it at the same moment
            first = not matched
            matched.append(message)
        if first:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGSTOP)  # every thread stops; SIGCONT resumes

    cli._err = err
    sys.argv = ["orch", *args]
    cli.main()


if __name__ == "__main__":
    main()
