"""regmap.gdb: a GDB remote stub over the tracer (``regmap exec --gdb``, ``--gdb-stdio``).

``listen`` and ``stdio`` make the connection's ends before the program is spawned (a bad
address is an error before anything runs; with ``--gdb-stdio`` the program must not inherit
the protocol's stdin and stdout); the `Debugger` they return is what ``trace_program`` calls
with the spawned tracer.  The protocol itself is written here, not taken from a library:
the Python ones that exist are for the client side or for embedded targets.  See docs/gdb.md.
"""
from __future__ import annotations

import os
import socket
import sys

from regmap.errors import RegmapError


class GdbError(RegmapError):
    """A --gdb address that cannot be listened on."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT``; the host is localhost unless named."""
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise GdbError(f"--gdb={text}: not HOST:PORT (a port is a number 0..65535)")
    return host, int(port)


class Debugger:
    """Called with the spawned tracer: connects gdb and serves it (`server.Session`)."""

    def __init__(self, listener: socket.socket | None = None, fds: tuple[int, int] | None = None,
                 program: str = "PROGRAM", stream=None):
        self.listener = listener
        self.fds = fds
        self.program = program
        self.stream = stream or sys.stderr

    def __call__(self, tracer) -> None:
        from regmap.gdb.packets import Channel
        from regmap.gdb.server import Session
        log = None
        if os.environ.get("REGMAP_GDB_LOG"):
            def log(line: str) -> None:
                self.stream.write(f"regmap gdb: {line}\n")
                self.stream.flush()
        connection = None
        if self.listener is not None:
            host, port = self.listener.getsockname()[:2]
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self.stream.write(f"regmap: waiting for gdb on {where}: "
                              f"gdb -ex 'target remote {where}' {self.program}\n")
            self.stream.flush()
            connection, _ = self.listener.accept()
            self.listener.close()
            channel = Channel(connection.fileno(), connection.fileno(), log)
        else:
            assert self.fds is not None
            channel = Channel(*self.fds, log)
        try:
            Session(tracer, channel, _layout(tracer.emulator), _avx512()).serve()
        finally:
            if connection is not None:
                connection.close()


def listen(address: str) -> Debugger:
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except (OSError, OverflowError) as error:
        listener.close()
        raise GdbError(f"--gdb={address}: cannot listen there: "
                       f"{getattr(error, 'strerror', None) or error}") from None
    listener.listen(1)
    return Debugger(listener=listener)


def stdio() -> Debugger:
    """The protocol on regmap's stdin and stdout; the program gets /dev/null as stdin and
    regmap's stderr as its stdout (and stderr)."""
    fds = (os.dup(0), os.dup(1))              # not inherited by the program
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return Debugger(fds=fds)


def _layout(emulator):
    from regmap.layout import Layout, load_layout
    layout = getattr(emulator, "layout", None)
    if isinstance(layout, Layout):
        return layout
    return load_layout(None if layout is None else os.fspath(layout))


def _avx512() -> bool:
    from regmap.x86.host import vector_width
    return vector_width() == 512
