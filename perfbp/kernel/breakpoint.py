"""What to watch: :class:`Breakpoint`, validated before any syscall."""

from __future__ import annotations

from typing import NamedTuple

from . import arch as _arch
from .arch import ACCESS_TYPES, ArchRules

_ACCESS_WORDS = {"w": "write", "rw": "read/write", "x": "execute", "r": "read"}
_CONSTRUCTORS = {"w": "write", "rw": "read_write", "x": "execute", "r": "read"}
# lengths this machine's debug registers take when naturally aligned (the
# fast path of Breakpoint.write; every other case goes through arch.validate)
_ALIGNED_LENGTHS = frozenset(_arch.current().data_lengths) if _arch.current().aligned else frozenset()
_TOP = (1 << 64) - 8


class _Fields(NamedTuple):
    address: int
    length: int
    access: str


class Breakpoint(_Fields):
    """One hardware breakpoint: an address, a length and an access type.

    Build one with the constructors, which check the architecture's rules
    before any syscall (on x86-64: lengths 1, 2, 4, 8, naturally aligned;
    execute breakpoints of length 8; no read-only watchpoints)::

        Breakpoint.write(addr, 8)        # count stores to 8 bytes at addr
        Breakpoint.read_write(addr, 4)   # count loads and stores
        Breakpoint.execute(func_addr)    # count executions of an instruction

    Attributes:
        address: first byte watched.
        length: bytes watched (``bp_len``).
        access: ``"w"``, ``"rw"``, ``"x"`` or ``"r"`` (perf's spelling).

    Raises:
        InvalidBreakpoint: the request breaks one of the architecture's rules.
    """

    __slots__ = ()

    def __new__(cls, address: int, length: int, access: str) -> "Breakpoint":
        # a small immutable record (a NamedTuple): cheap to build on the hot
        # path of opening a watch, validated before any syscall
        _arch.validate(access, address, length, _arch.current())
        return tuple.__new__(cls, (address, length, access))

    @classmethod
    def write(cls, address: int, length: int = 8) -> "Breakpoint":
        """Count writes to ``length`` bytes at ``address``."""
        if length in _ALIGNED_LENGTHS and not address % length and 0 <= address < _TOP:
            return tuple.__new__(cls, (address, length, "w"))  # valid: skip the full check
        return cls(address, length, "w")

    @classmethod
    def read_write(cls, address: int, length: int = 8) -> "Breakpoint":
        """Count reads and writes of ``length`` bytes at ``address``."""
        return cls(address, length, "rw")

    @classmethod
    def read(cls, address: int, length: int = 8) -> "Breakpoint":
        """Count reads only.  Not available on x86, which has no read-only
        watchpoints: use :meth:`read_write` there.

        Raises:
            InvalidBreakpoint: on x86 (the message suggests read_write).
        """
        return cls(address, length, "r")

    @classmethod
    def execute(cls, address: int) -> "Breakpoint":
        """Count executions of the instruction at ``address``."""
        return cls(address, _arch.current().exec_length, "x")

    @property
    def bp_type(self) -> int:
        """The kernel's ``HW_BREAKPOINT_*`` type."""
        return ACCESS_TYPES[self.access]

    def is_kernel(self, rules: ArchRules | None = None) -> bool:
        """Whether the watched range touches kernel space."""
        limit = (rules or _arch.current()).task_size_max
        return self[0] + (self[1] or 1) - 1 >= limit

    def moved(self, address: int, length: int | None = None) -> "Breakpoint":
        """The same access type at another address (and optionally length)."""
        return Breakpoint(address, self.length if length is None else length, self.access)

    @property
    def spec(self) -> str:
        """perf's spelling: ``mem:0x404118/8:w``."""
        return f"mem:{self.address:#x}/{self.length}:{self.access}"

    def describe(self) -> str:
        """Plain words: ``write watch on 8 bytes at 0x404118``."""
        what = _ACCESS_WORDS[self.access]
        if self.access == "x":
            return f"execute breakpoint at {self.address:#x}"
        return f"{what} watch on {self.length} byte{'s' if self.length > 1 else ''} at {self.address:#x}"

    def __repr__(self) -> str:
        name = _CONSTRUCTORS[self.access]
        if self.access == "x":
            return f"Breakpoint.{name}({self.address:#x})"
        return f"Breakpoint.{name}({self.address:#x}, {self.length})"
