"""``regmap alias``: show registers of a register file in basis terms, or check a file.

::

    regmap alias amd64 ah eflags     # ah = rax[15:8]
    regmap alias avr                 # every register of the file
    regmap alias --check my.regs     # my.regs: ok (12 registers, 4 basis)
"""
from __future__ import annotations

import argparse
import sys

from regmap.errors import AliasError


def add_parser(subparsers) -> argparse.ArgumentParser:
    from regmap.alias import SHIPPED
    p = subparsers.add_parser(
        "alias", help="show registers of a register file in terms of basis registers",
        description="Print each register of a register file as slices of basis registers "
                    f"(ah = rax[15:8]).  TARGET is a shipped file ({', '.join(SHIPPED)}) "
                    "or the path of a .regs file.")
    p.add_argument("target", nargs="?", metavar="TARGET", help="shipped name or file path")
    p.add_argument("registers", nargs="*", metavar="REG",
                   help="registers to show (default: every register)")
    p.add_argument("--check", metavar="FILE",
                   help="parse and solve FILE; report ok or the first error")
    p.set_defaults(func=run)
    return p


def format_register(rf, name: str) -> str:
    """One line: ``rax (basis, 64 bits)`` or ``ah = rax[15:8]``."""
    name = rf.canonical(name)
    if rf.is_basis(name):
        return f"{name} (basis, {rf.width(name)} bits)"
    return f"{name} = {rf.describe(name)}"


def check(path: str) -> int:
    from regmap.alias import load
    try:
        rf = load(path)
    except AliasError as e:
        print(f"regmap alias: {e}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(rf.registers)} registers, {len(rf.basis)} basis)")
    return 0


def run(args) -> int:
    from regmap.alias import load
    if args.check is not None:
        if args.target is not None:
            print("regmap alias: --check takes one FILE and no TARGET or REG", file=sys.stderr)
            return 2
        return check(args.check)
    if args.target is None:
        print("regmap alias: give a TARGET (a shipped name or a file), or --check FILE",
              file=sys.stderr)
        return 2
    try:
        rf = load(args.target)
    except AliasError as e:
        print(f"regmap alias: {e}", file=sys.stderr)
        return 1
    # the registers it has are shown even when some name is unknown (the status says so)
    unknown = [r for r in args.registers if r not in rf]
    for name in args.registers or rf.registers:
        if name not in unknown:
            print(format_register(rf, name))
    if unknown:
        sys.stdout.flush()
        print(f"regmap alias: {args.target} has no register "
              f"{', '.join(repr(r) for r in unknown)}", file=sys.stderr)
        return 1
    return 0
