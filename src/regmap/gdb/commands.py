"""Each gdb packet's meaning, against a `Session`.  ``handle`` returns the reply payload (""
for a packet we do not support, as the protocol asks), or None when there is none to send.

A malformed packet raises ValueError/IndexError somewhere in here; the session turns it
into an error reply.
"""
from __future__ import annotations

import os

from regmap.gdb import signals, target
from regmap.gdb.memory import PAGE, Unreadable
from regmap.gdb.packets import PACKET_SIZE, unescape

INT3 = b"\xcc"
WATCH_KINDS = {"2": "watch", "3": "rwatch", "4": "awatch"}
SUPPORTED = (f"PacketSize={PACKET_SIZE:x};QStartNoAckMode+;qXfer:features:read+;"
             "qXfer:auxv:read+;qXfer:exec-file:read+;qXfer:siginfo:read+;QPassSignals+;swbreak+;vContSupported+")


def _hex_le(value: int, bits: int) -> str:
    return value.to_bytes(bits // 8, "little").hex()


def _thread_id(text: str) -> int:
    """A thread id: hex, -1 (all) or 0 (any)."""
    return -1 if text == "-1" else int(text, 16)


def _xfer(data: bytes, annex: str) -> str:
    """A qXfer read reply: "m" and a piece, or "l" and the last piece."""
    offset, length = (int(part, 16) for part in annex.split(","))
    piece = data[offset:offset + length]
    return ("l" if offset + length >= len(data) else "m") + piece.decode("latin-1")


def _read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def handle(session, packet: bytes) -> str | None:
    text = packet.decode("latin-1")
    head = text[:1]
    if head in SIMPLE:
        return SIMPLE[head](session, text[1:], packet)
    if text.startswith("vCont"):
        return _vcont(session, text)
    if text.startswith("q") or text.startswith("Q"):
        return _query(session, text)
    if text.startswith("vKill"):
        session._kill()
        return "OK"
    return ""                                      # vMustReplyEmpty, vFile, ...: unsupported


# -- registers -------------------------------------------------------------------------------
def _g(session, _rest, _packet):
    machine = session._load(session.thread_for_registers())
    return "".join(_hex_le(target.read(machine, register), register.bits)
                   for register in session.registers)


def _G(session, rest, _packet):
    data = bytes.fromhex(rest)
    machine = session._load(session.thread_for_registers())
    offset = 0
    for register in session.registers:
        size = register.bits // 8
        if offset + size > len(data):
            break
        target.write(machine, register, int.from_bytes(data[offset:offset + size], "little"))
        offset += size
    machine.store()
    return "OK"


def _p(session, rest, _packet):
    register = session.registers[int(rest, 16)]
    machine = session._load(session.thread_for_registers())
    return _hex_le(target.read(machine, register), register.bits)


def _P(session, rest, _packet):
    number, value = rest.split("=")
    register = session.registers[int(number, 16)]
    data = bytes.fromhex(value)
    if len(data) != register.bits // 8:
        raise ValueError("wrong size")
    machine = session._load(session.thread_for_registers())
    target.write(machine, register, int.from_bytes(data, "little"))
    machine.store()
    return "OK"


# -- memory ----------------------------------------------------------------------------------
def _shadowed(session, address: int, data: bytes) -> bytes:
    """``data`` read at ``address`` with our int3s replaced by the bytes they cover."""
    if not session.breakpoints:
        return data
    out = bytearray(data)
    for spot, byte in session.breakpoints.items():
        if address <= spot < address + len(out):
            out[spot - address] = byte[0]
    return bytes(out)


def _m(session, rest, _packet):
    address, length = (int(part, 16) for part in rest.split(","))
    length = min(length, session.channel_limit)
    machine = session._load(session.thread_for_registers())
    return _shadowed(session, address, session.memory.read(machine, address, length)).hex()


def _write_memory(session, address: int, data: bytes) -> str:
    if not data:
        return "OK"
    data = bytearray(data)
    for spot in session.breakpoints:        # under an int3: the shadow changes, the int3 stays
        if address <= spot < address + len(data):
            session.breakpoints[spot] = bytes((data[spot - address],))
            data[spot - address] = INT3[0]
    machine = session._load(session.thread_for_registers())
    session.memory.write(machine, address, bytes(data))
    return "OK"


def _M(session, rest, _packet):
    where, value = rest.split(":")
    address, length = (int(part, 16) for part in where.split(","))
    data = bytes.fromhex(value)
    if len(data) != length:
        raise ValueError("length mismatch")
    return _write_memory(session, address, data)


def _X(session, _rest, packet):
    colon = packet.index(b":")
    address, length = (int(part, 16) for part in packet[1:colon].decode().split(","))
    data = unescape(packet[colon + 1:])
    if len(data) != length:
        raise ValueError("length mismatch")
    return _write_memory(session, address, data)


# -- break- and watchpoints --------------------------------------------------------------------
def _point(session, rest, insert: bool):
    kind, address, length = rest.split(";")[0].split(",")
    address, length = int(address, 16), int(length, 16)
    if kind == "0":
        if address < PAGE:
            return "E01"       # window bytes are registers, not code: an int3 there would be rcx's
        if insert:
            if address not in session.breakpoints:
                machine = session._load(session.thread_for_registers())
                original = session.memory.read(machine, address, 1)
                session.memory.write(machine, address, INT3)
                session.breakpoints[address] = original
        else:
            original = session.breakpoints.pop(address, None)
            if original is not None:
                session.memory.write(None, address, original)
        return "OK"
    if kind in WATCH_KINDS:
        if not session.memory.layout.contains(address, length):
            return "E01"       # not a window byte: no emulated access to see it (see docs/gdb.md)
        if insert:
            session.watchpoints[(address, length)] = WATCH_KINDS[kind]
        else:
            session.watchpoints.pop((address, length), None)
        # the emulator records its accesses only when asked
        session.tracer.sites.trace = bool(session.watchpoints) or session._watch_trace
        return "OK"
    return ""                                  # Z1 (hardware breakpoints): unsupported


def _Z(session, rest, _packet):
    return _point(session, rest, True)


def _z(session, rest, _packet):
    return _point(session, rest, False)


# -- execution -------------------------------------------------------------------------------
def _resume_at(session, address: str) -> None:
    if address:
        machine = session._load(session.thread_for_registers())
        machine.regs.rip = int(address, 16)
        machine.regs_dirty = True
        machine.store()


def _c(session, rest, _packet):
    _resume_at(session, rest)
    return _run(session, [("c", 0, -1)])


def _s(session, rest, _packet):
    _resume_at(session, rest)
    return _run(session, [("s", 0, session.thread_for_registers()), ("c", 0, -1)])


def _C(session, rest, _packet):
    sig, _, address = rest.partition(";")
    _resume_at(session, address)
    return _run(session, [("c", signals.from_gdb(int(sig, 16)), -1)])


def _S(session, rest, _packet):
    sig, _, address = rest.partition(";")
    _resume_at(session, address)
    return _run(session, [("s", signals.from_gdb(int(sig, 16)), session.thread_for_registers()),
                          ("c", 0, -1)])


def _vcont(session, text: str):
    if text == "vCont?":
        return "vCont;c;C;s;S"
    actions = []
    for action in text.split(";")[1:]:
        what, _, thread = action.partition(":")
        tid = _thread_id(thread) if thread else -1
        kind = what[0]
        if kind in "cs":
            actions.append((kind, 0, tid))
        elif kind in "CS":
            actions.append((kind.lower(), signals.from_gdb(int(what[1:], 16)), tid))
        else:
            return ""                          # t, r: not in all-stop mode
    if not actions:
        raise ValueError("vCont without actions")
    return _run(session, actions)


def _run(session, actions):
    reply = session.resume(actions)
    session.last_reply = reply
    return reply


def _question(session, _rest, _packet):
    return session.last_reply


def _H(session, rest, _packet):
    tid = _thread_id(rest[1:])
    if tid > 0 and tid not in session.threads:
        return "E01"
    if rest[0] == "g" and tid > 0:
        session.general = tid
    return "OK"


def _T(session, rest, _packet):
    return "OK" if int(rest, 16) in session.threads else "E01"


def _k(session, _rest, _packet):
    session._kill()
    return None


def _D(session, _rest, _packet):
    session.channel.send("OK")
    session.detach()
    return None


SIMPLE = {"g": _g, "G": _G, "p": _p, "P": _P, "m": _m, "M": _M, "X": _X, "Z": _Z, "z": _z,
          "c": _c, "C": _C, "s": _s, "S": _S, "?": _question, "H": _H, "T": _T, "k": _k,
          "D": _D}


# -- queries ---------------------------------------------------------------------------------
def _query(session, text: str):
    name, _, argument = text.partition(":")
    if name == "qSupported":
        return SUPPORTED
    if name == "QStartNoAckMode":
        session.channel.send("OK")
        session.channel.acks = False
        return None
    if name == "qXfer":
        obj, operation, annex, span = argument.split(":", 3)
        if operation != "read":
            return ""
        if obj == "features":
            if annex != "target.xml":
                return "E00"
            return _xfer(session.xml, span)
        if obj == "auxv":
            return _xfer(_read_file(f"/proc/{session.main}/auxv"), span)
        if obj == "siginfo":               # $_siginfo: what the stopped thread got
            import ctypes

            from regmap.trace import ptrace
            info = ptrace.SigInfo()
            ptrace.ptrace(ptrace.PTRACE_GETSIGINFO, session.thread_for_registers(), 0,
                          ctypes.addressof(info))
            return _xfer(bytes(info), span)
        if obj == "exec-file":
            pid = int(annex, 16) if annex else session.main
            return _xfer(os.readlink(f"/proc/{pid}/exe").encode(), span)
        return ""
    if name == "QPassSignals":
        session.pass_signals = {signals.from_gdb(int(number, 16))
                                for number in argument.split(";") if number}
        return "OK"
    if name == "qC":
        return f"QC{session.thread_for_registers():x}"
    if name == "qfThreadInfo":
        return "m" + ",".join(f"{tid:x}" for tid in session.threads) if session.threads else "l"
    if name == "qsThreadInfo":
        return "l"
    if name == "qAttached":
        return "0"                             # we started it: gdb's quit kills it
    if name == "qSymbol":
        return "OK"
    if name.startswith("qThreadExtraInfo"):
        tid = int(text.split(",")[1], 16)
        try:
            return _read_file(f"/proc/{tid}/comm").strip().hex()
        except OSError:
            return ""
    return ""


__all__ = ["handle", "Unreadable"]
