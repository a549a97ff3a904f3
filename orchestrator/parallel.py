"""Run one function per host, all hosts at once; every host gets a result or an error value.

A failure on one host never stops the others. Ctrl-C sets `cancel`, which per-host code checks
between steps so that it can roll back cleanly; then the interrupt is re-raised to the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

import paramiko

from orchestrator.errors import ConnectError, OrchError

T = TypeVar("T")
K = TypeVar("K")

MAX_WORKERS = 64


class Cancelled(OrchError):
    """The run was interrupted (Ctrl-C) before this host's step could start or finish."""


def _innermost(exc: BaseException) -> str:
    """The most specific text of a wrapped transport error.

    requests and urllib3 nest the cause in their args: ('Connection aborted.', OSError(...)).
    """
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = next((a for a in current.args if isinstance(a, BaseException)), None)
        if inner is None:
            inner = current.__cause__
        if inner is None:
            break
        current = inner
    return str(current) or type(current).__name__


def for_each(
    keys: Iterable[K],
    fn: Callable[[K], T],
    cancel: threading.Event | None = None,
    name: Callable[[K], str] = str,
) -> dict[K, T | OrchError]:
    """Call `fn(key)` for every key in parallel.

    Returns:
        key -> result, or the `OrchError` it raised (other exceptions are wrapped, with their
        type, so that a bug on one host still leaves a report for every host).

    Raises:
        KeyboardInterrupt: after `cancel` was set and every worker returned.
    """
    keys = list(keys)
    results: dict[K, T | OrchError] = {}
    if not keys:
        return results
    cancel = cancel or threading.Event()

    def guarded(key: K) -> T | OrchError:
        if cancel.is_set():
            return Cancelled(f"{name(key)}: interrupted before it started")
        try:
            return fn(key)
        except OrchError as exc:
            return exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # A transport error that escaped the session layer (a Docker API call over an SSH
            # connection that died, say): the host stopped answering, not a bug.
            return ConnectError(
                f"{name(key)}: lost the connection to the host or its Docker engine "
                f"({_innermost(exc)})"
            )
        except Exception as exc:
            return OrchError(f"{name(key)}: unexpected {type(exc).__name__}: {exc}")

    pool = ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(keys)))
    futures: dict[Future[T | OrchError], K] = {pool.submit(guarded, k): k for k in keys}
    interrupted = False
    try:
        pending = set(futures)
        while pending:
            try:
                _done, pending = wait(pending, timeout=0.2)
            except KeyboardInterrupt:
                interrupted = True
                cancel.set()
    finally:
        pool.shutdown(wait=True)
    for fut, key in futures.items():
        results[key] = fut.result()
    if interrupted:
        raise KeyboardInterrupt
    return results
