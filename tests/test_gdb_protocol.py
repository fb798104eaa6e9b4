"""regmap.gdb's parts that need no program and no gdb: the framing and the target description."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree

from hypothesis import given
from hypothesis import strategies as st

from regmap.gdb import packets, signals, target
from regmap.trace.machine import REGISTER_NAMES


def channel() -> tuple[packets.Channel, int]:
    """A channel whose replies (acks) go into a pipe; returns it and the pipe's read end."""
    read_end, write_end = os.pipe()
    return packets.Channel(-1, write_end), read_end


def feed(chan: packets.Channel, data: bytes) -> list:
    chan.pending += data
    return chan.parse()


@given(st.binary(max_size=200))
def test_framing_round_trips_any_payload(payload):
    chan, replies = channel()
    try:
        assert feed(chan, packets.frame(payload)) == [payload]
        assert os.read(replies, 16) == b"+"
    finally:
        os.close(replies)
        os.close(chan.write_fd)


@given(st.binary(max_size=300), st.binary(max_size=50))
def test_garbage_before_a_packet_never_hides_it(garbage, payload):
    """Whatever came before (noise, a packet cut short), a whole packet after a '$' is read,
    possibly after rejected ones; the reader never raises."""
    chan, replies = channel()
    try:
        found = feed(chan, garbage)
        found += feed(chan, packets.frame(payload))
        assert found[-1] == payload
    finally:
        os.close(replies)
        os.close(chan.write_fd)


def test_interrupts_and_bad_checksums():
    chan, replies = channel()
    try:
        assert feed(chan, b"\x03$g#00$g#67") == [packets.INTERRUPT, b"g"]
        assert os.read(replies, 16) == b"-+"
        assert chan.rejected == 1
        assert feed(chan, b"$x#1$g#67") == [b"g"]       # a checksum cut short
        assert os.read(replies, 16) == b"-+"
    finally:
        os.close(replies)
        os.close(chan.write_fd)


def test_target_descriptions_are_well_formed_and_match_the_register_list():
    for avx512 in (False, True):
        document = ElementTree.fromstring(target.description(avx512).split("\n", 2)[2])
        names = [reg.get("name") for reg in document.iter("reg")]
        assert names == [register.name for register in target.registers(avx512)]
        assert [int(reg.get("regnum")) for reg in document.iter("reg")] == list(range(len(names)))
        features = {feature.get("name") for feature in document.iter("feature")}
        assert ("org.gnu.gdb.i386.avx512" in features) == avx512
        for feature in document.iter("feature"):     # every type a register names is defined
            defined = {node.get("id") for node in feature if node.get("id")}
            for reg in feature.iter("reg"):
                assert reg.get("type") in defined | {"int", "int32", "int64", "uint64", "uint128",
                                                     "data_ptr", "code_ptr", "i387_ext"}, reg.attrib
        for register in target.registers(avx512):   # each is a slice of a register regmap has
            assert register.basis in REGISTER_NAMES | {target.FTAG,
                                                       *target.USER_FIELDS}, register


def test_the_x87_tag_word_round_trips():
    # st0 valid (1.0: exponent 0x3fff, integer bit), st1 zero, the rest empty, TOP = 0
    one = (0x3FFF << 64) | (1 << 63)
    full = target.full_tag(0b11, 0, [one, 0, 0, 0, 0, 0, 0, 0])
    assert full == 0b01_00 | 0xFFF0
    assert target.abridged_tag(full) == 0b11


def test_signal_numbers():
    import signal
    assert signals.to_gdb(signal.SIGUSR1) == 30 and signals.to_gdb(signal.SIGBUS) == 10
    for linux in range(1, 65):
        number = signals.to_gdb(linux)
        if number != signals.UNKNOWN:
            assert signals.from_gdb(number) == linux
