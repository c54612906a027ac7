"""What the dynamic linker knows about a program: its interpreter, the
libraries it needs and where ld.so finds them, and its copy relocations.

Pure Python over files (:class:`perfbp.symbols.elf.ElfReader`); no kernel.  Used to resolve a name to
the object that is really accessed at run time:

- **Copy relocations.**  A non-PIC access from an executable to a library's
  data (``optind``, ``optarg``, ``environ``, ``stdout``, ``__progname`` in
  most of coreutils, xz, gzip, bash ...) is linked with an
  ``R_X86_64_COPY`` relocation: the executable reserves the object in its
  own ``.bss``, ld.so copies the library's initial value there during
  relocation, and every access, the library's own included, goes to the
  copy.  The library's original is dead.  :func:`copy_target` finds the
  copy, also when it was made under an alias of the same object (the
  executable copies ``__environ``, the user asks for ``environ``).
- **Read-only memory.**  :func:`read_only_at` names the section of an
  address that the program maps without write permission (``.rodata``,
  ``.text``: a ``PT_LOAD`` without ``PF_W``), where no store can land.
- **Library search.**  :func:`library_closure` lists the libraries the
  program loads at start, in ld.so's breadth-first load order, found as
  ld.so finds them (``DT_RPATH``, ``LD_LIBRARY_PATH``, ``DT_RUNPATH``, the
  directories of ``/etc/ld.so.conf``, the defaults), so that a name can be
  checked and planned before anything runs.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional


#: ``R_<arch>_COPY`` by ELF machine: the relocation that copies a library's
#: object into the executable.
COPY_RELOCATION = {"EM_X86_64": 5, "EM_386": 5, "EM_AARCH64": 1024, "EM_ARM": 20,
                   "EM_PPC64": 19, "EM_RISCV": 4, "EM_S390": 9}
#: ``p_flags``' write bit and ``sh_flags``' allocated bit (gABI).
PF_W, SHF_ALLOC = 0x2, 0x2


@dataclass(frozen=True)
class Image:
    """The dynamic-linking facts of one ELF file.

    Attributes:
        path: the file.
        machine: ``e_machine`` (``EM_X86_64`` ...); ``elfclass`` 32 or 64.
        shared: ``ET_DYN`` (a PIE executable or a shared object): its
            run-time addresses are its link-time ones plus a load bias.
        interp: the ``PT_INTERP`` path (the dynamic linker), or None when
            the program is static.
        needed: ``DT_NEEDED`` names.
        rpath, runpath: ``DT_RPATH`` / ``DT_RUNPATH`` directories, with
            ``$ORIGIN`` expanded.
        soname: ``DT_SONAME``.
        copies: ``R_*_COPY`` relocations: symbol name -> (link-time address
            of the copy, size).
        first_load: ``(p_offset, p_vaddr)`` of the lowest ``PT_LOAD``.
        read_only: ``(start, end, name)`` link-time ranges mapped without
            write permission: each allocated section of a ``PT_LOAD``
            without ``PF_W`` (a file without section headers: the segment,
            named ``a read-only segment``).  ``.data.rel.ro`` is not among
            them: its segment is writable (ld.so relocates it, then
            ``PT_GNU_RELRO`` makes it read-only).
    """

    path: str
    machine: str
    elfclass: int
    shared: bool
    interp: Optional[str]
    needed: "tuple[str, ...]"
    rpath: "tuple[str, ...]"
    runpath: "tuple[str, ...]"
    soname: Optional[str]
    copies: "dict[str, tuple[int, int]]"
    first_load: "tuple[int, int]"
    read_only: "tuple[tuple[int, int, str], ...]" = ()

    def names(self) -> "set[str]":
        """What a user may call this object: its file name, its soname, its
        path."""
        out = {os.path.basename(self.path), self.path}
        if self.soname:
            out.add(self.soname)
        return out


def _expand(paths: str, origin: str) -> "tuple[str, ...]":
    out = []
    for p in paths.split(":"):
        if not p:
            continue
        p = p.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
        out.append(p)
    return tuple(out)


def image(path: str) -> Image:
    """The :class:`Image` of ``path`` (cached while the file is unchanged).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not an ELF file.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    return _with_path(_image(real, st.st_ino, st.st_mtime_ns, st.st_size), path)


def _with_path(img: Image, path: str) -> Image:
    return img if img.path == path else replace(img, path=path)


@lru_cache(maxsize=128)
def _image(path: str, _ino: int, _mtime: int, _size: int) -> Image:
    from .elf import (DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, ET_DYN, PT_INTERP, PT_LOAD,
                      SHT_DYNAMIC, ElfReader, StringTable)

    origin = os.path.dirname(os.path.realpath(path))
    with ElfReader(path) as elf:
        interp = None
        loads = []
        for seg in elf.segments:
            if seg.p_type == PT_INTERP:
                interp = elf.read(seg.p_offset, seg.p_filesz).split(b"\0")[0].decode(
                    "utf-8", "replace")
            elif seg.p_type == PT_LOAD:
                loads.append((seg.p_vaddr, seg.p_offset))
        read_only = _read_only_ranges(elf)
        needed: list[str] = []
        rpath: tuple[str, ...] = ()
        runpath: tuple[str, ...] = ()
        soname = None
        for dynamic in elf.sections:
            if dynamic.sh_type != SHT_DYNAMIC or not 0 < dynamic.sh_link < len(elf.sections):
                continue
            strings = StringTable(elf.data(elf.sections[dynamic.sh_link]))
            for dyn in elf.rows(dynamic, "Dyn"):
                if dyn.d_tag == DT_NEEDED:
                    needed.append(strings[dyn.d_val])
                elif dyn.d_tag == DT_RPATH:
                    rpath = _expand(strings[dyn.d_val], origin)
                elif dyn.d_tag == DT_RUNPATH:
                    runpath = _expand(strings[dyn.d_val], origin)
                elif dyn.d_tag == DT_SONAME:
                    soname = strings[dyn.d_val]
        # a copy relocation is a program's (ld -shared never makes one), and a
        # program ld.so starts has PT_INTERP: libraries' relocations, 36,000
        # in libpython, are not read
        copies = _copy_relocations(elf) if interp is not None else {}
    vaddr, offset = min(loads) if loads else (0, 0)
    return Image(path, elf.machine, elf.elfclass, elf.e_type == ET_DYN, interp,
                 tuple(needed), rpath, runpath, soname, copies, (offset, vaddr), read_only)


def _read_only_ranges(elf) -> "tuple[tuple[int, int, str], ...]":
    """:attr:`Image.read_only` from the headers: the allocated sections that
    lie in a loadable segment without ``PF_W`` (the segments themselves when
    the file has no section headers)."""
    from .elf import PT_LOAD

    fixed = [(s.p_vaddr, s.p_vaddr + s.p_memsz) for s in elf.segments
             if s.p_type == PT_LOAD and not s.p_flags & PF_W]
    if not elf.sections:
        return tuple((lo, hi, "a read-only segment") for lo, hi in fixed)
    return tuple((s.sh_addr, s.sh_addr + s.sh_size, name)
                 for s, name in zip(elf.sections, elf.names or [""] * len(elf.sections))
                 if s.sh_flags & SHF_ALLOC and s.sh_size
                 and any(lo <= s.sh_addr and s.sh_addr + s.sh_size <= hi for lo, hi in fixed))


def read_only_at(path: str, vaddr: int, length: int) -> Optional[str]:
    """The section (``.rodata``, ``.text`` ...) that holds all of the
    ``length`` bytes at link-time address ``vaddr`` of ``path`` when the
    program maps it without write permission; None when a store can reach
    any of them, or the file cannot be read."""
    try:
        ranges = image(path).read_only
    except (OSError, ValueError):
        return None
    for lo, hi, name in ranges:
        if lo <= vaddr and vaddr + max(length, 1) <= hi:
            return name or "a read-only section"
    return None


def _copy_relocations(elf) -> "dict[str, tuple[int, int]]":
    """``{name: (r_offset, st_size)}`` of the ``R_*_COPY`` relocations of
    the ``SHT_REL``/``SHT_RELA`` sections that name a symbol table."""
    from .elf import R_INFO, SHT_REL, SHT_RELA, StringTable

    copy_type = COPY_RELOCATION.get(elf.machine)
    copies: dict[str, tuple[int, int]] = {}
    if copy_type is None:
        return copies
    for sec in elf.sections:
        if sec.sh_type not in (SHT_REL, SHT_RELA) or not 0 < sec.sh_link < len(elf.sections):
            continue
        shift, mask = R_INFO[elf.elfclass]  # ELF64_R_SYM, ELF64_R_TYPE
        found = [(r[0], r[1] >> shift) for r in elf.rows(
            sec, "Rela" if sec.sh_type == SHT_RELA else "Rel", raw=True) if r[1] & mask == copy_type]
        if found:
            symtab = elf.sections[sec.sh_link]
            syms = elf.rows(symtab, "Sym")
            strings = StringTable(elf.data(elf.sections[symtab.sh_link]))
            for r_offset, index in found:
                if 0 < index < len(syms) and syms[index].st_name:
                    copies[strings[syms[index].st_name]] = (r_offset, syms[index].st_size)
    return copies


def aliases(path: str, value: int) -> "frozenset[str]":
    """Every exported name of a data object at link-time address ``value``
    in ``path`` (``environ`` and ``__environ``, ``program_invocation_short_name``
    and ``__progname`` ...): the names an executable's copy relocation can
    give it, which are its dynamic symbols (``.dynsym``; not the whole
    ``.symtab`` of a debug file, ten times longer in libc)."""
    return _exported_objects(path).get(value, frozenset())


@lru_cache(maxsize=32)
def _exported_objects(path: str) -> "dict[int, frozenset[str]]":
    """The names of the defined data objects of ``path``'s ``.dynsym``, by
    link-time address."""
    from .elf import SHN_UNDEF, STT_OBJECT, ElfReader

    by_value: dict[int, set[str]] = {}
    try:
        with ElfReader(path) as elf:
            for name, value, _size, info, shndx in elf.symbols(".dynsym"):
                if info & 0xF == STT_OBJECT and shndx != SHN_UNDEF:
                    by_value.setdefault(value, set()).add(name)
    except (OSError, ValueError):
        return {}
    return {value: frozenset(names) for value, names in by_value.items()}


def copy_target(exe: Image, names: "frozenset[str] | set[str]") -> "tuple[str, int, int] | None":
    """The executable's copy of a library object known by any of ``names``:
    ``(the name it copied, link-time address, size)``, or None."""
    for name in sorted(names):
        if name in exe.copies:
            addr, size = exe.copies[name]
            return name, addr, size
    return None


@lru_cache(maxsize=8)
def _config_dirs(conf: str = "/etc/ld.so.conf") -> "tuple[str, ...]":
    """The library directories of ld.so.conf and the files it includes."""
    out: list[str] = []

    def read(path: str, depth: int) -> None:
        if depth > 8:
            return
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("include"):
                pattern = line.split(None, 1)[1] if " " in line else ""
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.dirname(path), pattern)
                for inc in sorted(glob.glob(pattern)):
                    read(inc, depth + 1)
            elif line.startswith("/"):
                out.append(line)

    read(conf, 0)
    return tuple(out)


DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")


def find_library(name: str, requester: Image,
                 env: "dict[str, str] | None" = None) -> Optional[str]:
    """The file ld.so would load for ``DT_NEEDED`` ``name`` of
    ``requester``, or None.  A candidate must be an ELF file of the
    requester's class and machine (ld.so skips the others)."""
    if "/" in name:
        return name if os.path.exists(name) else None
    environ = os.environ if env is None else env
    dirs: list[str] = []
    if not requester.runpath:
        dirs += requester.rpath
    dirs += [d for d in environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += requester.runpath
    multiarch = {"EM_X86_64": "x86_64-linux-gnu", "EM_AARCH64": "aarch64-linux-gnu",
                 "EM_386": "i386-linux-gnu"}.get(requester.machine)
    dirs += _config_dirs()
    if multiarch:
        dirs += [f"/lib/{multiarch}", f"/usr/lib/{multiarch}"]
    dirs += DEFAULT_DIRS
    for d in dirs:
        path = os.path.join(d, name)
        if not os.path.isfile(path):
            continue
        try:
            cand = image(path)
        except (OSError, ValueError):
            continue
        if cand.machine == requester.machine and cand.elfclass == requester.elfclass:
            return path
    return None


def library_closure(exe: str, env: "dict[str, str] | None" = None) -> "list[str]":
    """The libraries ``exe`` loads at start, breadth first as ld.so loads
    them (the executable first, ld.so itself not included); names that
    cannot be found are left out."""
    try:
        top = image(exe)
    except (OSError, ValueError):
        return [exe]
    order = [exe]
    seen = {os.path.realpath(exe)}
    interp_soname = None
    if top.interp:  # the program's own loader, whatever path names it, is ld.so
        try:
            interp_soname = image(top.interp).soname
        except (OSError, ValueError):
            pass
    queue = [top]
    while queue:
        cur = queue.pop(0)
        for name in cur.needed:
            path = find_library(name, cur, env)
            if path is None:
                continue
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            if top.interp and os.path.realpath(top.interp) == real:
                continue
            if interp_soname is not None and name == interp_soname:
                continue
            order.append(path)
            try:
                queue.append(image(path))
            except (OSError, ValueError):
                pass
    return order


def matches(obj: str, path: str) -> bool:
    """Whether the user's ``@OBJECT`` names the object at ``path``: its
    path, file name or soname, or a file name that starts with it and a dot
    (``libc`` or ``libc.so`` for ``libc.so.6``)."""
    base = os.path.basename(path)
    if obj in (path, base) or base.startswith(obj + "."):
        return True
    try:
        soname = image(path).soname
    except (OSError, ValueError):
        return False
    return soname is not None and (obj == soname or soname.startswith(obj + "."))
