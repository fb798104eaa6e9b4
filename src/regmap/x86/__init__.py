"""x86-64 emulation of instructions whose memory operands are the page-0 window."""
from regmap.x86.cpu import Access
from regmap.x86.emulator import Emulator, Form, Step, supported_codes
from regmap.x86.machine import Machine
from regmap.x86.support import Coverage, coverage

__all__ = ["Access", "Coverage", "Emulator", "Form", "Machine", "Step", "coverage", "supported_codes"]
