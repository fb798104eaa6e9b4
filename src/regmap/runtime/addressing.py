"""Strict or permissive addressing in-process (``map_registers(strict=...)``).

Strict: the emulator takes only constant addresses (``[0x38]``) as window accesses; a
register-addressed page-0 access (``[rbx+8]`` with rbx = 0) goes on as the genuine fault it
is without regmap.  Permissive (the default): it reads and writes registers, and if the
process has a SIGSEGV handler of its own (a native library's, which may rely on the fault,
as a JVM's implicit null checks do), regmap says so once on stderr.
"""
from __future__ import annotations

from regmap.errors import handler_warning
from regmap.runtime import _sys, genuine

SAID = [False]
NOT_OWN = [-1]      # the last handler found not to be the program's own: not looked at again


def set_strict(state, strict: bool) -> None:
    """Put the installation's emulator in strict or permissive addressing.  Sites that ran
    a compiled fast path or were translated under the other mode are decoded afresh."""
    emulator = state.emulator
    if not hasattr(emulator, "strict"):
        return                              # a stand-in emulator (tests): its own rules
    if emulator.strict != strict:
        from regmap.runtime import handler, patch
        from regmap.runtime import dispatch
        patch.restore_all()
        dispatch.forget()
        handler.forget_fast_paths()
        emulator.strict = strict
    emulator.watch = None if strict else watch


def watch(machine, form) -> None:
    """`Emulator.watch`, inside the signal handler: one line if the SIGSEGV would have gone
    to a handler of the program's own."""
    if SAID[0]:
        return
    from regmap.runtime import handler
    state = handler.ACTIVE
    action = genuine.previous_action(_sys.SIGSEGV, state)
    if action.handler == NOT_OWN[0]:
        return
    if genuine.ends_the_process(action):
        NOT_OWN[0] = action.handler
        return
    SAID[0] = True
    genuine.write_stderr("regmap: " + handler_warning(
        "this process", form.disassembly, f"{form.address:#x}", "map_registers(strict=True)") + "\n")
