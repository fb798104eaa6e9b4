"""What a new user trips over on the command line (issue 19, items 5, 8 and 10): --translate's
value, regmap emulate's memory, stack, random values, step limit and 64-bit rip, and argument
parsing (whose usage an error shows, options among the values, hex spellings, alias)."""
import json
import random
import shutil
import subprocess
import sys

import pytest

import regmap
from regmap.cli import main


def regmap_command(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "regmap", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


@pytest.fixture
def cli(capsys):
    """``regmap ARGS`` in this process: status, stdout, stderr (SystemExit is a status)."""
    def run(*args):
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit:
            status = exit.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, out, err)
    return run


# -- item 5: --translate=N takes a number --------------------------------------------------------

@pytest.mark.parametrize("word", ["--translate=abc", "--translate=-1", "--translate=1.5",
                                  "--translate=", "--transl=abc"])
def test_translate_with_a_value_that_is_no_count_is_an_error(word):
    done = regmap_command("exec", word, "/bin/true")
    assert done.returncode == 2
    assert "command not found" not in done.stderr
    assert f"--translate={word.partition('=')[2]}: N is how many faults" in done.stderr


def test_translate_alone_still_leaves_the_program_its_name():
    done = regmap_command("exec", "--translate", "true")
    assert done.returncode == 0, done.stderr
    done = regmap_command("exec", "--translate", "-1", "true")
    assert done.returncode == 2 and "--translate=-1: N is" in done.stderr


def test_translate_alone_before_a_program_named_with_a_path(tmp_path):
    program = tmp_path / "true"
    program.symlink_to(shutil.which("true"))
    done = regmap_command("exec", "--translate", "./true", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = regmap_command("exec", "--translate", ".5", "true")
    assert done.returncode == 2 and "--translate=.5: N is" in done.stderr


# -- item 8: regmap emulate completes ------------------------------------------------------------

def test_memory_gives_the_code_real_memory(cli):
    data = bytes(random.Random(1).getrandbits(8) for _ in range(16))
    done = cli("emulate", "--hex", "48 8b 04 25 08 10 00 00",      # mov rax, [0x1008]
               "--memory", f"0x1000={data.hex()}", "--memory", "0x2000=00", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["changed"]["rax"] == ["0x0", hex(int.from_bytes(data[8:], "little"))]


def test_without_memory_the_read_faults(cli):
    done = cli("emulate", "--hex", "48 8b 04 25 08 10 00 00")
    assert done.returncode == 1 and "faulted" in done.stderr


@pytest.mark.parametrize("args,message", [
    (("--memory", "0x1000"), "give memory as ADDR=HEX"),
    (("--memory", "0x1000=zz"), "'zz' is not hex bytes"),
    (("--memory", "x=00"), "is not a number"),
    (("--memory", "0x400000=00"), "overlaps the code (--rip)"),
    (("--memory", "0x1000=0000", "--memory", "0x1001=00"), "overlaps --memory at 0x1001"),
    (("--memory", "0xffffffffffffffff=0000"), "within 0 .. 0xffffffffffffffff"),
    (("--rip", "0x10000000000000000"), "--rip 0x10000000000000000: an address is 0 to"),
    (("--rip", "-1"), "an address is 0 to"),
])
def test_bad_memory_and_rip_are_named(cli, args, message):
    done = cli("emulate", "--hex", "90", *args)
    assert done.returncode == 1 and message in done.stderr and done.stdout == ""


def test_stack_lets_push_and_pop_run(cli):
    # push qword [8] (rcx); pop rax
    done = cli("emulate", "--hex", "ff 34 25 08 00 00 00 58", "rcx=0x1234", "--stack", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["changed"]["rax"] == ["0x0", "0x1234"]
    assert result["memory_writes"] == [{"address": 0x7FFF0000 - 8, "bytes": "3412000000000000"}]
    given = cli("emulate", "--hex", "ff 34 25 08 00 00 00", "--stack", "rsp=0x5000", "--json")
    assert json.loads(given.stdout)["changed"]["rsp"] == ["0x5000", "0x4ff8"]
    assert cli("emulate", "--hex", "ff 34 25 08 00 00 00").returncode == 1   # no stack: a fault


def test_random_prints_its_seed_and_values_and_running_them_again_is_the_same(cli):
    text = cli("emulate", "--hex", "48 01 c8", "--random", "rcx=5")     # add rax, rcx
    assert text.returncode == 0
    header, *lines = text.stdout.split("\n\n")[0].splitlines()
    seed = int(header.removeprefix("random values, --seed ").rstrip(":"))
    drawn = dict(line.split() for line in lines)
    assert "rcx" not in drawn and {"rax", "rdx", "ymm15", "cf"} <= set(drawn)
    again = cli("emulate", "--hex", "48 01 c8", "rcx=5", "--json", *(f"{k}={v}" for k, v in drawn.items()))
    replay = cli("emulate", "--hex", "48 01 c8", "rcx=5", "--json", "--random", "--seed", seed)
    expected = regmap.emulate("48 01 c8", {**{k: int(v, 16) for k, v in drawn.items()}, "rcx": 5})
    assert json.loads(again.stdout)["changed"]["rax"] == [hex(x) for x in expected.changed["rax"]]
    replayed = json.loads(replay.stdout)
    assert replayed["random"] == {"seed": seed, "values": drawn}
    assert replayed["changed"] == json.loads(again.stdout)["changed"]


def test_seed_alone_implies_random(cli):
    alone = json.loads(cli("emulate", "--hex", "90", "--seed", "7", "--json").stdout)
    both = json.loads(cli("emulate", "--hex", "90", "--seed", "7", "--random", "--json").stdout)
    assert alone["random"]["seed"] == 7 and alone["random"] == both["random"]
    assert alone["random"]["values"]["rax"] != "0x0"


def test_running_out_of_steps_is_a_failure_with_a_message(cli):
    done = cli("emulate", "--hex", "eb fe", "--max-steps", "3")          # jmp $
    assert done.returncode == 1
    assert done.stderr == ("regmap emulate: stopped after 3 instructions (--max-steps 3); "
                           "rip 0x400000 is still in the code\n")


def test_rip_wraps_at_64_bits(cli):
    top = (1 << 64) - 1
    done = cli("emulate", "--hex", "90", "--rip", hex(top), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["changed"]["rip"] == [hex(top), "0x0"]
    for trace in (True, False):       # the compiled fast path and the traced step alike
        result = regmap.emulate("48 03 04 25 08 00 00 00", {"rcx": 1}, rip=top - 7, trace=trace)
        assert result.regs["rip"] == 0 and result.regs["rax"] == 1


# -- item 10: argument parsing --------------------------------------------------------------------

@pytest.mark.parametrize("command", ["emulate", "alias", "layout", "explain", "coverage", "doctor"])
def test_a_bad_option_shows_the_subcommands_usage(command):
    needed = {"emulate": ["90"], "explain": ["8"]}.get(command, [])
    done = regmap_command(command, "--bogus-option", *needed)
    assert done.returncode == 2
    assert done.stderr.startswith(f"usage: regmap {command} ")
    assert f"regmap {command}: error: unrecognized arguments: --bogus-option" in done.stderr


def test_emulate_help_does_not_make_the_values_look_required():
    done = regmap_command("emulate", "--help")
    assert done.returncode == 0
    assert "CODE [REG=VALUE ...]" in done.stdout
    values = done.stdout[done.stdout.index("  REG=VALUE"):]
    assert "optional" in values.split("\n  -")[0]


@pytest.mark.parametrize("order", [
    ("90", "--json", "rax=1", "cf=1"),
    ("90", "rax=1", "--json", "cf=1"),
    ("--json", "90", "rax=1", "cf=1"),
    ("90", "rax=1", "cf=1", "--json"),
    ("90", "--layout", "default", "rax=1", "--json", "cf=1"),
])
def test_options_may_stand_between_the_code_and_the_values(cli, order):
    done = cli("emulate", "--hex", *order)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["flags"]["cf"] == 1


@pytest.mark.parametrize("spelling", ["0x48 0x03 0x04 0x25 0x08 0x00 0x00 0x00",
                                      "\\x48\\x03\\x04\\x25\\x08\\x00\\x00\\x00",
                                      "48,03,04,25,08,00,00,00", "4803042508000000"])
def test_hex_takes_the_usual_spellings(cli, spelling):
    done = cli("emulate", "--hex", spelling, "rcx=2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"][0]["bytes"] == "4803042508000000"


def test_alias_reports_an_unknown_name_and_prints_the_others(cli):
    done = cli("alias", "amd64", "ah", "mm0", "eflags")
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["ah = rax[15:8]", "eflags = rflags[31:0]"]
    assert done.stderr == "regmap alias: amd64 has no register 'mm0'\n"


@pytest.mark.parametrize("command", ["layout", "explain", "coverage"])
def test_every_subcommand_describes_itself_in_its_help(command):
    done = regmap_command(command, "--help")
    paragraphs = done.stdout.split("\n\n")
    assert done.returncode == 0 and not paragraphs[1].startswith(("positional", "options"))
