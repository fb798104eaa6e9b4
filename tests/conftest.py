import sys


def pytest_terminal_summary(terminalreporter):
    oracle = sys.modules.get("oracle")
    if oracle is not None:
        for line in oracle.REPORT.summary_lines():
            terminalreporter.write_line(line)
