"""The framing of the GDB remote serial protocol: ``$payload#checksum``, acks, ``^C``.

A packet is ``$``, the payload, ``#`` and two hex digits: the payload's byte sum modulo
256.  The receiver acks each packet with ``+`` (or asks again with ``-``) until the two
sides agree to stop (``QStartNoAckMode``).  A lone ``\\x03`` between packets is an
interrupt.  In a payload ``}`` escapes the next byte (XOR 0x20); gdb escapes ``$``, ``#``,
``}`` and ``*`` in binary data, so a ``$`` never occurs inside a packet it sends: a ``$``
before the ``#`` means the packet before it was cut short, and it is dropped.

Robustness is the point here: whatever arrives -- noise, a packet cut short, one longer
than we said we accept, a wrong checksum -- the reader drops it, says ``-`` where a
packet was meant, and goes on reading.
"""
from __future__ import annotations

import os

# the largest packet we accept (said in qSupported as PacketSize, hex): more than any
# register or memory transfer gdb makes with it
PACKET_SIZE = 0x4000
INTERRUPT = object()             # what ``packets`` yields for a ^C
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFF


def frame(payload: bytes) -> bytes:
    """``payload`` as a packet, with the bytes the protocol reserves escaped."""
    escaped = bytearray()
    for byte in payload:
        if byte in b"$#}*":
            escaped += bytes((0x7D, byte ^ 0x20))
        else:
            escaped.append(byte)
    return b"$" + bytes(escaped) + b"#%02x" % checksum(escaped)


def unescape(data: bytes) -> bytes:
    """A packet's payload with ``}`` escapes resolved (the checksum covers the escaped form)."""
    if b"}" not in data:
        return data
    out = bytearray()
    escape = False
    for byte in data:
        if escape:
            out.append(byte ^ 0x20)
            escape = False
        elif byte == 0x7D:
            escape = True
        else:
            out.append(byte)
    return bytes(out)


class Channel:
    """One connection to gdb: ``read_fd`` and ``write_fd`` (the same socket, or stdin and
    stdout).  ``receive`` takes whatever bytes arrived and returns the packets (payload bytes)
    and interrupts (`INTERRUPT`) complete in them; ``send`` frames and writes a reply."""

    def __init__(self, read_fd: int, write_fd: int, log=None):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.acks = True
        self.pending = bytearray()
        self.last = b""                 # the last packet sent, for a '-'
        self.closed = False
        self.log = log                  # a callable taking a line, for --gdb-log style debugging
        self.rejected = 0               # packets dropped (bad checksum, cut short, too long)

    def fileno(self) -> int:
        return self.read_fd

    def receive(self) -> list:
        """Read once (the caller knows bytes are waiting) and return what is complete."""
        try:
            data = os.read(self.read_fd, 65536)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        self.pending += data
        return self.parse()

    def parse(self) -> list:
        found: list = []
        buffer = self.pending
        while buffer:
            head = buffer[0]
            if head == 0x03:
                found.append(INTERRUPT)
                del buffer[0]
                continue
            if head == 0x2D and self.acks and self.last:        # '-': send it again
                self._write(self.last)
            if head != 0x24:                # '+', '-', noise between packets: skip it
                del buffer[0]
                continue
            end = buffer.find(b"#", 1)
            restart = buffer.find(b"$", 1, end if end >= 0 else len(buffer))
            if restart >= 0:                # cut short: another packet began before the '#'
                self._reject(buffer, restart)
                continue
            if end < 0:
                if len(buffer) > PACKET_SIZE + 4:
                    self._reject(buffer, len(buffer))           # too long: drop what came
                break                       # wait for the rest
            if len(buffer) < end + 3:
                break                       # the checksum's digits are still to come
            body = bytes(buffer[1:end])
            digits = bytes(buffer[end + 1:end + 3])
            if not all(chr(d) in HEX_DIGITS for d in digits):
                self._reject(buffer, end + 1)       # no checksum: what follows may be a packet
                continue
            del buffer[:end + 3]
            if len(body) > PACKET_SIZE or int(digits, 16) != checksum(body):
                self.rejected += 1
                if self.acks:
                    self._write(b"-")
                continue
            if self.acks:
                self._write(b"+")
            if self.log:
                self.log(f"<- {body[:200]!r}")
            found.append(unescape(body))
        return found

    def _reject(self, buffer: bytearray, upto: int) -> None:
        del buffer[:upto]
        self.rejected += 1
        if self.acks:
            self._write(b"-")

    def send(self, payload: bytes | str) -> None:
        if isinstance(payload, str):
            payload = payload.encode("latin-1")
        if self.log:
            self.log(f"-> {payload[:200]!r}")
        self.last = frame(payload)
        self._write(self.last)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed:
            try:
                written = os.write(self.write_fd, view)
            except InterruptedError:
                continue
            except OSError:
                self.closed = True          # gdb has gone: the session ends
                return
            view = view[written:]
