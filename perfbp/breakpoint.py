"""What to watch: :class:`Breakpoint`, validated before any syscall."""

from __future__ import annotations

from dataclasses import dataclass

from . import arch as _arch
from .arch import ACCESS_TYPES, ArchRules

_ACCESS_WORDS = {"w": "write", "rw": "read/write", "x": "execute", "r": "read"}
_CONSTRUCTORS = {"w": "write", "rw": "read_write", "x": "execute", "r": "read"}


@dataclass(frozen=True)
class Breakpoint:
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

    address: int
    length: int
    access: str

    def __post_init__(self) -> None:
        _arch.validate(self.access, self.address, self.length, _arch.current())

    @classmethod
    def write(cls, address: int, length: int = 8) -> "Breakpoint":
        """Count writes to ``length`` bytes at ``address``."""
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
        return _arch.is_kernel_address(self.address, self.length, rules or _arch.current())

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
