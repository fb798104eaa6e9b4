"""`regmap layout [NAME|FILE]` and `regmap explain ADDR [SIZE]`."""
from __future__ import annotations

import sys

from regmap.errors import AliasError, LayoutError
from regmap.layout import load_layout


def add_parser(subparsers) -> None:
    layout = subparsers.add_parser(
        "layout", help="print a page-0 layout as a table",
        description="Print a page-0 layout as a table: each window offset, its size and the "
                    "register there.  NAME is a shipped layout (default: default), "
                    "FILE a layout file; --check FILE only validates one.")
    layout.add_argument("layout", nargs="?", default=None, metavar="NAME|FILE",
                        help="a shipped layout (default) or a layout file")
    layout.add_argument("--check", metavar="FILE", default=None,
                        help="only check that FILE is a valid layout (errors as file:line:col)")
    layout.set_defaults(func=show_layout)

    explain = subparsers.add_parser(
        "explain", help="say which registers a window access is",
        description="Say which registers an access of SIZE bytes at window address ADDR reads "
                    "or writes under a layout (the shipped default unless --layout).")
    explain.add_argument("address", metavar="ADDR", help="window address (0x.. or decimal)")
    explain.add_argument("size", nargs="?", default="1", metavar="SIZE", help="bytes (default 1)")
    explain.add_argument("--layout", default=None, metavar="NAME|FILE")
    explain.set_defaults(func=explain_access)


def _number(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise LayoutError(f"{what} {text!r} is not a number (write 0x38 or 56)") from None


def show_layout(args) -> int:
    if args.check is not None:
        return check_layout(args.check)
    try:
        layout = load_layout(args.layout)
    except (AliasError, LayoutError) as error:
        print(f"regmap layout: {error}", file=sys.stderr)
        return 1
    print(f"layout {layout.name}: {layout.size}-byte window at 0x0")
    print(f"{'address':>9}  {'size':>4}  register")
    for place in layout.placements():
        print(f"{place.address:#9x}  {place.size:>4}  {place.name}")
    return 0


def check_layout(path: str) -> int:
    """`regmap layout --check FILE`: exit 0 with a one-line summary, or 1 with the error."""
    try:
        layout = load_layout(path if "/" in path or path.endswith(".regs") else f"./{path}")
    except (AliasError, LayoutError) as error:
        print(f"regmap layout: {error}", file=sys.stderr)
        return 1
    placed = layout.placements()
    used = sum(place.size for place in placed)
    print(f"{path}: ok (layout {layout.name}, {layout.size} bytes, {len(placed)} registers "
          f"placed in {used} bytes)")
    return 0


def explain_access(args) -> int:
    try:
        layout = load_layout(args.layout)
        address, size = _number(args.address, "address"), _number(args.size, "size")
        if size < 1:
            raise LayoutError(f"size {args.size}: an access is at least 1 byte")
        slices = layout.resolve(address, size)
    except (AliasError, LayoutError) as error:
        print(f"regmap explain: {error}", file=sys.stderr)
        return 1
    basis = " . ".join(f"{b}[{hi}:{lo}]" for b, hi, lo in slices)
    described = layout.describe(address, size)
    print(f"{address:#x}, {size} -> {described}" + (f"   ({basis})" if basis != described else ""))
    return 0
