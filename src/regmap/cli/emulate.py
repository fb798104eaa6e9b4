"""``regmap emulate CODE [REG=VALUE...]``: what instructions do to the registers, on the pure backend.

::

    regmap emulate 'adc al, [9]' rax=0xff rcx=0x100 cf=1
    regmap emulate --hex '12 04 25 09 00 00 00' rax=0xff cf=1 --json
    regmap emulate 'l: add rax, [8]; dec rcx; jnz l' rcx=3 --random --seed 7

CODE is Intel syntax assembled with the system assembler (GNU ``as``,
``.intel_syntax noprefix``; ``;`` separates instructions), or hex with ``--hex``: both through
`regmap.assembler`, as `regmap.emulate` reads them.
"""
from __future__ import annotations

import argparse
import json
import sys

from regmap.accesses import access_record, format_access
from regmap.assembler import AssemblyError, assemble, hex_bytes  # noqa: F401  (tests import assemble here)
from regmap.cli.emulate_inputs import STACK_TOP, read_inputs
from regmap.emulation import Emulation, format_change
from regmap.errors import RegmapError

STEPS_PRINTED = 100          # text output lists at most this many instructions

DESCRIPTION = """\
Run instructions on the pure backend (no process, any OS) and print what they did:
each instruction with its page-0 window accesses, then every register and flag
that changed, before -> after.  CODE is Intel syntax, assembled with the system
assembler (GNU as, .intel_syntax noprefix; separate instructions with ';'; sizes
as 'qword ptr [8]' or NASM's 'qword [8]'), or hex bytes with --hex ('48 03',
'0x48 0x03', '\\x48\\x03' or '48,03').
Registers not given are zero (or random with --random)."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "emulate", help="run instructions on given registers and show what changed",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("code", metavar="CODE", help="instructions in Intel syntax, or hex with --hex")
    p.add_argument("values", nargs="*", metavar="REG=VALUE",
                   help="optional, any number, before or after the options: initial register "
                        "values (rax=0xff ah=1 xmm0=0x... cf=1); VALUE is hex (0x), binary "
                        "(0b), decimal or negative (two's complement: rax=-1) and must fit "
                        "the register; a flag is 0 or 1")
    p.add_argument("--hex", action="store_true", help="CODE is hex bytes, not assembly")
    p.add_argument("--random", action="store_true",
                   help="registers not given are random (general, ymm0-15, status flags); "
                        "the seed and the values drawn are printed")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for --random (alone, it implies --random)")
    p.add_argument("--memory", action="append", default=[], metavar="ADDR=HEX",
                   help="real memory the code may touch: HEX bytes at ADDR (repeatable; "
                        "--memory 0x1000=0102030405060708)")
    p.add_argument("--stack", action="store_true",
                   help=f"a zeroed stack: 64 KiB below rsp and 4 KiB above it "
                        f"(rsp is {STACK_TOP:#x} unless given)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--layout", default=None, metavar="NAME|FILE", help="the page-0 layout")
    p.add_argument("--rip", default="0x400000", metavar="ADDR", help="where the code sits")
    p.add_argument("--max-steps", type=int, default=10_000, metavar="N",
                   help="stop after N instructions (default 10000)")
    p.set_defaults(func=run, intermixed="values")


def run(args) -> int:
    from regmap.layout import load_layout
    from regmap.pure import emulate
    try:
        code = hex_bytes(args.code) if args.hex else assemble(args.code)
        layout = load_layout(args.layout)
        inputs = read_inputs(args, layout, len(code))
        result = emulate(code, inputs.regs, rip=inputs.rip, layout=layout, memory=inputs.memory,
                         max_steps=args.max_steps)
    except (RegmapError, ValueError) as error:
        print(f"regmap emulate: {error}", file=sys.stderr)
        return 1
    if args.json:
        output = as_json(result)
        if inputs.seed is not None:
            output["random"] = {"seed": inputs.seed,
                                "values": {name: hex(value) for name, value in inputs.random.items()}}
        print(json.dumps(output, indent=2))
    else:
        print("\n".join([*_random_text(inputs), *as_text(result), *_memory_text(result)]))
    if not result.finished:          # the code did not run to its end: not a result to trust
        print(f"regmap emulate: stopped after {len(result.steps)} instructions (--max-steps "
              f"{args.max_steps}); rip {result.regs['rip']:#x} is still in the code", file=sys.stderr)
        return 1
    return 0


def _memory_text(result: Emulation) -> list[str]:
    """The writes to real memory (--memory, --stack), in order."""
    return [f"memory [{address:#x}] {len(data)} byte{'s' * (len(data) != 1)} written: {data.hex(' ')}"
            for address, data in result.memory_writes]


def _random_text(inputs) -> list[str]:
    """--random's lines: the seed (to run it again) and each value drawn."""
    if inputs.seed is None:
        return []
    width = max((len(name) for name in inputs.random), default=0)
    return [f"random values, --seed {inputs.seed}:",
            *(f"    {name:<{width}}  {value:#x}" for name, value in inputs.random.items()), ""]


# -- output ------------------------------------------------------------------------------------

def as_text(result: Emulation) -> list[str]:
    lines = []
    for step in result.steps[:STEPS_PRINTED]:
        lines.append(f"{step.address:#x}  {step.code.hex(' '):<24} {step.disassembly}")
        lines.extend(f"    {format_access(access)}" for access in step.accesses or ())
    if len(result.steps) > STEPS_PRINTED:
        lines.append(f"... {len(result.steps) - STEPS_PRINTED} more instructions")
    if not result.finished:
        lines.append(f"stopped after {len(result.steps)} instructions (--max-steps); "
                     "rip is still in the code")
    changes = [(name, format_change(*values)) for name, values in result.changed.items()]
    changes += [(name, f"{before} -> {after}") for name, (before, after) in result.changed_flags.items()]
    width = max((len(name) for name, _ in changes), default=0)
    lines.append("")
    lines.extend(f"{name:<{width}}  {change}" for name, change in changes)
    if not changes:
        lines.append("no register changed")
    return lines


def as_json(result: Emulation) -> dict:
    return {
        "steps": [{"address": step.address, "bytes": step.code.hex(), "disassembly": step.disassembly,
                   "accesses": [access_record(access) for access in step.accesses or ()]}
                  for step in result.steps],
        "finished": result.finished,
        "changed": {name: [hex(before), hex(after)] for name, (before, after) in result.changed.items()},
        "flags_changed": {name: list(values) for name, values in result.changed_flags.items()},
        "flags": result.flags,
        "memory_writes": [{"address": address, "bytes": data.hex()}
                          for address, data in result.memory_writes],
    }
