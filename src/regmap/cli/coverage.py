"""`regmap coverage [--json] [--unsupported]`: how regmap runs every memory form this CPU has."""
from __future__ import annotations

import json
import sys

from regmap.x86.support import coverage


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "coverage", help="list every instruction form with a memory operand this CPU runs, and how regmap runs it",
        description="List every instruction form with a memory operand that this CPU runs, and "
                    "how regmap runs each: Python semantics (python), the native engine (native) or "
                    "not at all (unsupported).  --json gives totals and every form.")
    parser.add_argument("--json", action="store_true", help="one JSON document: totals and every form")
    parser.add_argument("--unsupported", action="store_true", help="list only the unsupported forms")
    parser.set_defaults(func=show_coverage)


def show_coverage(args) -> int:
    result = coverage()
    if args.json:
        json.dump(result.as_dict(), sys.stdout, indent=1)
        print()
        return 0
    for entry in result.entries:
        if args.unsupported and entry.status != "unsupported":
            continue
        print(f"{entry.name:48} {entry.status}" + (f"  ({entry.reason})" if entry.reason else ""))
    total = len(result.entries)
    print(f"total {total}: python {result.count('python')}, native {result.count('native')}, "
          f"unsupported {result.count('unsupported')}; {100 * result.fraction:.1f}% supported")
    return 0
