"""`regmap doctor [--json] [--seed N] [--all]`: does regmap work on this machine?

Prints the host (CPU, XSAVE layout, MXCSR_MASK, vm.mmap_min_addr, ptrace, the native engine),
then runs a sample of window forms through every backend available here against the CPU
itself (`regmap.doctor`).  Exit status 0 only if everything that ran agrees.
"""
from __future__ import annotations

import json
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check that regmap works on this machine: the host, then a self-test "
                       "of every backend against the CPU")
    parser.add_argument("--json", action="store_true",
                        help="one JSON document (its schema: docs/doctor.md)")
    parser.add_argument("--seed", type=int, default=None,
                        help="draw the starting registers from this seed (default: a fixed one)")
    parser.add_argument("--all", action="store_true", help="list every form, not only failures")
    parser.set_defaults(func=doctor)


def doctor(args) -> int:
    from regmap.doctor import DEFAULT_SEED, examine
    report = examine(DEFAULT_SEED if args.seed is None else args.seed)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        show(report, every_case=args.all)
    return 0 if report["ok"] else 1


def show(report: dict, every_case: bool = False, out=None) -> None:
    from regmap.doctor import flag_difference
    out = out or sys.stdout

    def line(label: str, text: str) -> None:
        print(f"{label:9} {text}", file=out)

    cpu, kernel = report["cpu"], report["kernel"]
    line("regmap", f"{report['regmap']} on Python {sys.version.split()[0]}, "
                   f"{kernel['system']} {kernel['release']}")
    line("cpu", f"{cpu['vendor']} family {cpu['family']:#x} model {cpu['model']:#x} "
                f"stepping {cpu['stepping']}; {cpu['vector_width']}-bit vectors")
    line("features", " ".join(cpu["features"]) or "none")
    if cpu["missing_features"]:
        line("lacks", " ".join(cpu["missing_features"]))
    xsave = cpu["xsave"]
    line("xsave", f"XCR0 {cpu['xcr0']:#x}, standard-format image {xsave['size']} bytes")
    for component in xsave["components"]:
        line("", f"  {component['name']:10} offset {component['offset']:5}, {component['size']} bytes")
    line("mxcsr", f"MXCSR_MASK {cpu['mxcsr_mask']:#06x}")
    minimum = kernel["mmap_min_addr"]
    line("kernel", "vm.mmap_min_addr " + ("unknown" if minimum is None else str(minimum))
         + ("  (0: a program could map page 0, and its accesses would not fault)"
            if minimum == 0 else ""))
    line("ptrace", ("allowed: " if report["ptrace"]["available"] else "NOT allowed: ")
         + report["ptrace"]["detail"])
    line("native", "the native engine " + report["native_engine"]["detail"])
    cases = report["cases"]
    ran = [case for case in cases if case["status"] != "skipped"]
    engines = {name: sum(case["engine"] == name for case in ran) for name in ("python", "native")}
    print(file=out)
    print(f"self-test: {len(ran)} forms ({engines['python']} on Python semantics, "
          f"{engines['native']} on the native engine), seed {report['seed']}, "
          "each compared with the CPU's own run", file=out)
    for name, backend in report["backends"].items():
        if backend["status"] == "skipped":
            text = "skipped: " + backend["detail"]
        else:
            text = (f"{backend['agree']} agree" + (f", {backend['disagree']} DISAGREE"
                                                   if backend["disagree"] else "")
                    + f"  ({backend['detail']})")
        print(f"  {name:12} {text}", file=out)
    for case in cases if every_case else ():
        if case["status"] == "skipped":
            print(f"  skipped  {case['form']}: {case['skipped']}", file=out)
        else:
            print(f"  {case['status']:7}  {case['form']:44} {case['family']:10} {case['engine']}"
                  + ("  (undefined flags compared too)" if case["undefined_flags"] else ""),
                  file=out)
    skipped = [case for case in cases if case["status"] == "skipped"]
    if skipped and not every_case:
        print(f"  ({len(skipped)} forms skipped: the CPU lacks their instruction set; --all lists them)",
              file=out)
    for entry in report["disagreements"]:
        where = f"{entry['form']}  [{entry['family']}, {entry['engine']}]  {entry['backend']}"
        if entry["error"]:
            print(f"DISAGREE {where}: {entry['error']}", file=out)
        else:
            detail = (f"  (flags {flag_difference(entry['expected'], entry['got'])})"
                      if entry["register"] == "rflags" else "")
            print(f"DISAGREE {where}: {entry['register']} expected {entry['expected']}, "
                  f"got {entry['got']}{detail}", file=out)
    for problem in report["problems"]:
        print(f"PROBLEM  {problem}", file=out)
    verdict = ("ok: regmap works on this machine" if report["ok"]
               else "FAILED: regmap does not work correctly on this machine")
    print(f"{verdict} ({report['seconds']:.1f} s)", file=out)
