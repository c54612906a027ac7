"""Turning instruction addresses into ``function+offset (object)``.

An ip seen in a sample is mapped through the process's mappings (MMAP /
MMAP2 records, the same ones perf uses) to a file offset in an ELF object,
then to the object's virtual address through its PT_LOAD segments, then to
the function that contains it (``.symtab``, else ``.dynsym``), with
pyelftools.  Pure Python over files; no kernel.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional

from ..kernel.system import open_regular


@dataclass(frozen=True)
class Location:
    """Where an ip lies.

    Attributes:
        ip: the address.
        dso: the object's path (or ``[unknown]``).
        symbol: the function's name, or None.
        offset: ip minus the function's start.
        vaddr: the ip as a link-time address in ``dso`` (for line lookups).
    """

    ip: int
    dso: str
    symbol: Optional[str]
    offset: int = 0
    vaddr: Optional[int] = None

    def __str__(self) -> str:
        if self.symbol is None:
            return f"{self.ip:#x}" + (f" ({os.path.basename(self.dso)})" if self.dso != "[unknown]" else "")
        return f"{self.symbol}+{self.offset:#x}"

    @property
    def short_dso(self) -> str:
        return os.path.basename(self.dso)


class ElfObject:
    """The function symbols and load segments of one ELF file."""

    def __init__(self, path: str) -> None:
        from elftools.elf.elffile import ELFFile

        self.path = path
        self.segments: list[tuple[int, int, int]] = []  # (p_offset, p_filesz, p_vaddr)
        starts: dict[int, tuple[str, int]] = {}
        with open_regular(path) as f:
            elf = ELFFile(f)
            self.pie_or_shared = elf["e_type"] == "ET_DYN"
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    self.segments.append((seg["p_offset"], seg["p_filesz"], seg["p_vaddr"]))
            for name in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(name)
                if sec is None:
                    continue
                for sym in sec.iter_symbols():
                    # pyelftools names STT_GNU_IFUNC (10) "STT_LOOS"
                    if sym["st_info"]["type"] not in ("STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS"):
                        continue
                    if sym["st_shndx"] == "SHN_UNDEF" or not sym.name:
                        continue
                    addr = sym["st_value"]
                    # prefer the first table (.symtab) and sized symbols
                    if addr not in starts or (starts[addr][1] == 0 and sym["st_size"]):
                        starts[addr] = (sym.name, sym["st_size"])
                if starts and name == ".symtab":
                    break
        self._addrs = sorted(starts)
        self._syms = [starts[a] for a in self._addrs]

    def vaddr_of_offset(self, offset: int) -> Optional[int]:
        for p_off, p_size, p_vaddr in self.segments:
            if p_off <= offset < p_off + max(p_size, 1):
                return offset - p_off + p_vaddr
        return None

    def function_at(self, vaddr: int) -> "tuple[str, int] | None":
        i = bisect.bisect_right(self._addrs, vaddr) - 1
        if i < 0:
            return None
        name, size = self._syms[i]
        start = self._addrs[i]
        if size and vaddr >= start + size:
            return None
        return name, vaddr - start


@dataclass(frozen=True)
class Symbol:
    """A named symbol of an ELF file (``st_value`` is a link-time address)."""

    name: str
    value: int
    size: int
    kind: str  # "object", "func", "notype" or "tls" (thread-local)
    local: bool


def named_symbols(path: str) -> "dict[str, list[Symbol]]":
    """Every defined data, function and untyped symbol of ``path`` by name
    (``.symtab``, else ``.dynsym``); read once per file (whatever path names
    it: /lib and /usr/lib are one on merged-/usr systems) while unchanged.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not ELF.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    return _named_symbols(real, st.st_ino, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _named_symbols(path: str, _ino: int, _mtime: int, _size: int
                   ) -> "dict[str, list[Symbol]]":
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    kinds = {"STT_OBJECT": "object", "STT_FUNC": "func", "STT_NOTYPE": "notype",
             "STT_TLS": "tls", "STT_LOOS": "func"}
    out: dict[str, list[Symbol]] = {}
    with open_regular(path) as f:
        try:
            elf = ELFFile(f)
            for table in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(table)
                if sec is None:
                    continue
                for sym in sec.iter_symbols():
                    kind = kinds.get(sym["st_info"]["type"])
                    if kind is None or not sym.name or sym["st_shndx"] == "SHN_UNDEF":
                        continue
                    entry = Symbol(sym.name, sym["st_value"], sym["st_size"], kind,
                                   sym["st_info"]["bind"] == "STB_LOCAL")
                    if entry not in out.setdefault(sym.name, []):
                        out[sym.name].append(entry)
                if out and table == ".symtab":
                    break
        except ELFError as exc:
            raise ValueError(f"{path} is not an ELF file: {exc}") from None
    return out


def load_bias(pid: int, path: str) -> int:
    """Where ``path`` is loaded in process ``pid``: the difference between
    run-time and link-time addresses (0 for a non-PIE executable).

    Raises:
        LookupError: ``path`` is not mapped in the process.
    """
    real = os.path.realpath(path)
    segments = ElfObject(real).segments if load_object(real) is None else load_object(real).segments
    if not segments:
        raise LookupError(f"{path} has no loadable segments")
    first_off, _sz, first_vaddr = min(segments, key=lambda sg: sg[2])
    page = 4096
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 6 or os.path.realpath(parts[5].strip()) != real:
                continue
            start = int(parts[0].split("-")[0], 16)
            pgoff = int(parts[2], 16)
            if pgoff == first_off & ~(page - 1):
                return start - (first_vaddr & ~(page - 1))
    raise LookupError(f"{path} is not mapped in process {pid}")


@lru_cache(maxsize=256)
def load_object(path: str) -> Optional[ElfObject]:
    """The parsed ELF at ``path``, or None when it is missing or not ELF."""
    try:
        return ElfObject(path)
    except Exception:  # not ELF, unreadable, damaged: symbolization degrades to raw ips
        return None


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    pgoff: int
    path: str


class AddressSpace:
    """The file mappings of one process."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._maps: list[Mapping] = []

    def add(self, m: Mapping) -> None:
        # a new mapping replaces whatever it overlaps (mmap semantics)
        keep = [x for x in self._maps if x.end <= m.start or x.start >= m.end]
        keep.append(m)
        keep.sort(key=lambda x: x.start)
        self._maps = keep
        self._starts = [x.start for x in keep]

    def find(self, ip: int) -> Optional[Mapping]:
        i = bisect.bisect_right(self._starts, ip) - 1
        if i >= 0 and ip < self._maps[i].end:
            return self._maps[i]
        return None

    def copy(self) -> "AddressSpace":
        new = AddressSpace()
        new._starts = list(self._starts)
        new._maps = list(self._maps)
        return new


KERNEL_START = 0xFFFF800000000000


class KernelSymbols:
    """Kernel text symbols from /proc/kallsyms (addresses need root or
    kernel.kptr_restrict=0; without them kernel ips stay raw).

    The file (~120,000 lines, 5 MB) is parsed with numpy: every line starts
    with a fixed-width hex address, a space, the type letter, a space and the
    name; names are decoded only for the symbols looked up."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        import numpy as np

        self._data = b""
        self._addrs = np.zeros(0, dtype=np.uint64)
        self._name_at = np.zeros(0, dtype=np.int64)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return
        width = data.find(b" ")
        if not data or not 0 < width <= 16:
            return
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10)
        if not len(ends) or ends[-1] != len(buf) - 1:
            ends = np.append(ends, len(buf))
        starts = np.concatenate(([0], ends[:-1] + 1))
        starts = starts[starts + width + 3 < ends]  # room for " T x"
        starts = starts[buf[starts + width] == 32]
        kind = buf[starts + width + 1]
        starts = starts[(kind == ord("t")) | (kind == ord("T")) | (kind == ord("w"))
                        | (kind == ord("W"))]
        lut = np.full(256, 255, dtype=np.uint8)
        lut[48:58] = np.arange(10)
        lut[97:103] = np.arange(10, 16)
        lut[65:71] = np.arange(10, 16)
        # one hex digit column at a time: a (lines x width) matrix of u64
        # would cost 16 times the memory of the addresses
        addrs = np.zeros(len(starts), dtype=np.uint64)
        good = np.ones(len(starts), dtype=bool)
        for k in range(width):
            digit = lut[buf[starts + k]]
            good &= digit != 255
            addrs = addrs << np.uint64(4) | digit.astype(np.uint64)
        starts, addrs = starts[good], addrs[good]
        nonzero = addrs != 0
        addrs, starts = addrs[nonzero], starts[nonzero]
        order = np.argsort(addrs, kind="stable")  # the first line of an address wins
        addrs, starts = addrs[order], starts[order]
        first = np.ones(len(addrs), dtype=bool)
        first[1:] = addrs[1:] != addrs[:-1]
        self._data = data
        self._addrs = addrs[first]
        self._name_at = starts[first] + width + 3

    def _name(self, i: int) -> str:
        start = int(self._name_at[i])
        end = self._data.find(b"\n", start)
        raw = self._data[start:end if end >= 0 else len(self._data)]
        return raw.split()[0].decode("utf-8", "replace") if raw.strip() else ""

    def resolve(self, ip: int) -> Location:
        import numpy as np

        i = int(np.searchsorted(self._addrs, np.uint64(ip), side="right")) - 1
        if i < 0:
            return Location(ip, "[kernel.kallsyms]", None)
        return Location(ip, "[kernel.kallsyms]", self._name(i), ip - int(self._addrs[i]))

    def lookup(self, name: str) -> "int | None":
        """The address of a kernel text symbol by name (first match)."""
        raw = name.encode()
        pos = self._data.find(b" " + raw + b"\n")
        while pos >= 0:
            line_start = self._data.rfind(b"\n", 0, pos) + 1
            parts = self._data[line_start:pos + len(raw) + 1].split()
            if len(parts) >= 3 and parts[1] in (b"t", b"T", b"w", b"W") and parts[2] == raw:
                return int(parts[0], 16) or None
            pos = self._data.find(b" " + raw + b"\n", pos + 1)
        return None


def kernel_symbol_any(name: str, path: str = "/proc/kallsyms") -> "tuple[int, str] | None":
    """``(address, type letter)`` of a kernel symbol of any type (text, data,
    bss), or None when /proc/kallsyms does not list it (data symbols appear
    only with CONFIG_KALLSYMS_ALL) or hides addresses."""
    import re

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    m = re.search(rb"^([0-9a-fA-F]+) (\w) " + re.escape(name.encode()) + rb"$", data, re.M)
    if not m:
        return None
    return int(m.group(1), 16), m.group(2).decode()


@lru_cache(maxsize=1)
def kernel_symbols() -> KernelSymbols:
    return KernelSymbols()


class Symbolizer:
    """Symbolizes ips of many processes from their mapping records."""

    def __init__(self) -> None:
        self.spaces: dict[int, AddressSpace] = {}

    def add_mmap(self, pid: int, start: int, length: int, pgoff: int, path: str) -> None:
        self.spaces.setdefault(pid, AddressSpace()).add(Mapping(start, start + length, pgoff, path))

    def fork(self, parent: int, child: int) -> None:
        if parent in self.spaces and parent != child:
            self.spaces[child] = self.spaces[parent].copy()

    def exec(self, pid: int) -> None:
        self.spaces[pid] = AddressSpace()

    def add_proc_maps(self, pid: int) -> bool:
        """Read a live process's executable mappings from /proc (fallback when
        a recording lacks them)."""
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) < 6 or "x" not in parts[1]:
                        continue
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    self.add_mmap(pid, start, end - start, int(parts[2], 16), parts[5].strip())
            return True
        except OSError:
            return False

    def resolve(self, pid: int, ip: int) -> Location:
        if ip >= KERNEL_START:
            return kernel_symbols().resolve(ip)
        space = self.spaces.get(pid)
        m = space.find(ip) if space else None
        if m is None:
            return Location(ip, "[unknown]", None)
        obj = load_object(m.path) if m.path.startswith("/") else None
        if obj is None:
            return Location(ip, m.path, None)
        vaddr = obj.vaddr_of_offset(ip - m.start + m.pgoff)
        if vaddr is None:
            return Location(ip, m.path, None)
        fn = obj.function_at(vaddr)
        if fn is None:
            return Location(ip, m.path, None, 0, vaddr)
        return Location(ip, m.path, fn[0], fn[1], vaddr)

    def resolve_many(self, pairs: "Iterable[tuple[int, int]]") -> "dict[tuple[int, int], Location]":
        return {(pid, ip): self.resolve(pid, ip) for pid, ip in pairs}
