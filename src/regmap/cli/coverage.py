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
    parser.add_argument("--translation", action="store_true",
                        help="also how hot-site translation takes a site of each supported form "
                             "with a constant window address: in place, trampoline, or not (why)")
    parser.set_defaults(func=show_coverage)


def show_coverage(args) -> int:
    result = coverage()
    if args.translation:
        return show_translation(result, args.json)
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


def show_translation(result, as_json: bool) -> int:
    from regmap.layout import load_layout
    from regmap.x86.host import vector_width
    from regmap.x86.samples import fast_fault_of, short_stub_of, stub_of, translation_of
    layout, width = load_layout(), vector_width()
    rows = []
    stubbed = fast = short = short_stubbed = 0
    for entry in result.entries:
        if entry.status != "unsupported":
            rows.append((entry.name, entry.status) + translation_of(entry.code, layout, width))
            stubbed += stub_of(entry.code, layout, width) is None
            fast += fast_fault_of(entry.code, layout, width) is None
            why = short_stub_of(entry.code, layout, width)
            short += why != "not short" and why != "no encoding with a register address"
            short_stubbed += why is None
    counts = {kind: sum(1 for row in rows if row[2] == kind) for kind in ("in place", "trampoline", "not")}
    if as_json:
        json.dump({"supported": len(rows), **counts, "register-addressed": stubbed,
                   "short": short, "short register-addressed": short_stubbed, "fast faults": fast,
                   "forms": [{"name": n, "status": s, "translation": k, "reason": r}
                             for n, s, k, r in rows]}, sys.stdout, indent=1)
        print()
        return 0
    for name, status, kind, reason in rows:
        print(f"{name:48} {status:7} {kind}" + (f"  ({reason})" if reason else ""))
    translated = counts["in place"] + counts["trampoline"]
    print(f"supported {len(rows)}: in place {counts['in place']}, trampoline {counts['trampoline']}, "
          f"not {counts['not']}; {100 * translated / max(len(rows), 1):.1f}% translated")
    print(f"register-addressed ([rdi + disp32], 5 bytes or more): {stubbed} of {len(rows)} get a stub "
          f"({100 * stubbed / max(len(rows), 1):.1f}%)")
    print(f"register-addressed, shorter than a jmp rel32 ([rdi + disp8], then dec r10): "
          f"{short_stubbed} of {short} get a punned stub ({100 * short_stubbed / max(short, 1):.1f}%)")
    print(f"fast faults (a faulting site sent to its trampoline, unpatched): {fast} of {len(rows)} "
          f"({100 * fast / max(len(rows), 1):.1f}%)")
    return 0
