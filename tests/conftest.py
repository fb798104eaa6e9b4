import sys


def pytest_terminal_summary(terminalreporter):
    oracle = sys.modules.get("oracle")
    if oracle is not None:
        for line in oracle.REPORT.summary_lines():
            terminalreporter.write_line(line)
    runner = sys.modules.get("cpu_runner")
    if runner is not None and runner._RUNNER:
        # whose answers the oracle took as the CPU's: without gcc the engine's own stub's, which
        # cannot show a bug in the stub's loading and saving of the machine
        terminalreporter.write_line(
            "oracle: the CPU's answers came from the independent runner (tests/programs/cpu_runner.c)"
            if runner._RUNNER[0] is not None else
            f"oracle: the CPU's answers came from the native engine's own stub: {runner.why_not()}")
