"""The native engine: an instruction regmap has no Python semantics for runs on the host CPU.

Its window operand is moved onto a real *shadow page* holding the window's
bytes (`engine`), the thread's registers and x87/SSE/AVX(-512) state are
loaded from a state block, the instruction runs, everything is saved back
(`region`, `state`), and the emulator commits the difference like any other
instruction's effect (`family`).  Linux on x86-64 only; elsewhere the forms
that need it raise `UnsupportedInstruction` saying why.
"""
from regmap.x86.host import cpu_flags, missing_features, platform_problem, vector_count, vector_width
from regmap.x86.native.state import NativeState

__all__ = ["NativeState", "cpu_flags", "missing_features", "platform_problem", "vector_count",
           "vector_width"]
