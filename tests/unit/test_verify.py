"""verify's attach stream: Docker's frame format, and one script/answer exchange over a socket."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from orchestrator.matrix import END_MARK
from orchestrator.verify import _converse, demux


def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(data)) + data


def test_demux_splits_frames_and_keeps_an_incomplete_one() -> None:
    data = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"partial")
    frames, rest = demux(data[:-3])
    assert frames == [(1, b"out\n"), (2, b"err\n")]
    assert rest == frame(1, b"partial")[:-3]
    frames, rest = demux(rest + data[-3:])
    assert frames == [(1, b"partial")]
    assert rest == b""


def test_demux_waits_for_a_whole_header() -> None:
    frames, rest = demux(b"\x01\x00\x00")
    assert frames == [] and rest == b"\x01\x00\x00"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def serve(sock: socket.socket, answer: Callable[[bytes], None]) -> threading.Thread:
    """The engine's side: read one line from `sock`, then call `answer` with it."""

    def run() -> None:
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                return
            line += chunk
        answer(line)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_converse_sends_one_line_and_reads_up_to_the_end_mark(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    got: list[bytes] = []

    def answer(line: bytes) -> None:
        got.append(line)
        out = frame(1, b"@@ping 10.0.0.2 ok\n") + frame(2, b"warn\n")
        out += frame(1, f"@@neigh\n{END_MARK}\n".encode())
        for i in range(0, len(out), 5):  # in small pieces, as a network may deliver it
            theirs.sendall(out[i : i + 5])
        # and then nothing: the probe stays up, the stream stays open

    serve(theirs, answer)
    text = _converse(ours, "echo hi", limit_s=5)
    assert got == [b"echo hi\n"]
    assert text == f"@@ping 10.0.0.2 ok\nwarn\n@@neigh\n{END_MARK}\n"


def test_converse_gives_up_after_its_limit(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    serve(theirs, lambda line: theirs.sendall(frame(1, b"@@ping 10.0.0.2 ")))
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=re.escape("nothing came within 0.5 s")):
        _converse(ours, "echo hi", limit_s=0.5)
    assert time.monotonic() - start < 2


def test_converse_fails_when_the_stream_ends_before_the_end_mark(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Half an answer is no answer: the probe (or its engine) stopped, and it is reported so."""
    ours, theirs = pair

    def answer(line: bytes) -> None:
        theirs.sendall(frame(1, b"@@ping 10.0.0.2 half"))
        theirs.shutdown(socket.SHUT_WR)

    serve(theirs, answer)
    with pytest.raises(ConnectionError, match="ended before the answer"):
        _converse(ours, "echo hi", limit_s=5)
