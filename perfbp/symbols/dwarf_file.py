"""The DWARF of one ELF file: where it is, and its variables by name.

:mod:`perfbp.symbols.dwarf` resolves ``config.flags`` from a variable's DIE
and its type; this module finds that DIE, as cheaply as the file allows:

1. **Where the DWARF is.**  In the file itself, or in its separate debug
   file (:mod:`perfbp.symbols.debuginfo`: by build-id under
   /usr/lib/debug/.build-id, by ``.gnu_debuglink``, CRC checked, or in the
   debuginfod cache).  :func:`origin` tells it from the ELF headers alone
   (no DWARF read), which is what a cache hit needs.
2. **The cache** (:mod:`perfbp.symbols.dwarf_cache`): the members already
   resolved in this DWARF, and its variable index, kept on disk between
   runs.  A store applies only while its source, the file the DWARF was
   read from, is the one this run would read and is unchanged.
3. **A name table** the compiler or a tool wrote (``.debug_names``,
   ``.gdb_index``, ``.debug_pubnames``: :mod:`perfbp.symbols.dwarf_accel`),
   when it covers every unit: only the units it names are scanned.
4. **The scan** of every unit (:mod:`perfbp.symbols.dwarf_index`), kept in
   the cache for the next run.

pyelftools (``DWARFInfo``) is loaded only when a DIE must be read: on a
cache hit for the member asked, nothing of the DWARF is.

Pure Python over files; no kernel.
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple, Optional

from . import debuginfo, dwarf_cache
from .elf import debug_facts, file_with
from ..errors import SymbolNotFound
from ..kernel.system import open_regular

if TYPE_CHECKING:
    from .dwarf_accel import NameTable

__all__ = ["DebugFile", "Origin", "load", "origin", "store_for", "remember"]


def identity(path: str) -> str:
    """``REALPATH:SIZE:MTIME_NS`` of a file: what says it is unchanged.

    Raises:
        OSError: it cannot be read.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def file_key(path: str) -> "tuple[str, int, int, int]":
    st = os.stat(path)
    return os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns


# --------------------------------------------------------------------------
# Where the DWARF is
# --------------------------------------------------------------------------

class Origin(NamedTuple):
    """Where a file's DWARF is, as its headers tell.

    Attributes:
        key: the cache key: ``build-id:HEX``, or ``file:REALPATH:SIZE:MTIME``.
        source: the :func:`identity` of the file holding the DWARF (the
            file itself, or the first place a separate debug file may be).
    """

    key: str
    source: str


def origin(path: str) -> Optional[Origin]:
    """The :class:`Origin` of ``path`` from its ELF headers (a few small
    reads), or None when they do not tell (not ELF, unreadable, no DWARF
    found): the full load then says why.  A separate debug file is the
    first candidate that exists; its CRC is not checked here (a store is
    only ever made by :func:`load`, which checks it)."""
    try:
        return _origin(*file_key(path))
    except OSError:
        return None


@lru_cache(maxsize=64)
def _origin(real: str, _ino: int, size: int, mtime: int) -> Optional[Origin]:
    try:
        facts = debug_facts(real)
        key = (f"build-id:{facts.build_id}" if facts.build_id else
               f"file:{real}:{size}:{mtime}")
        if facts.dwarf:
            return Origin(key, f"{real}:{size}:{mtime}")
        for cand in debuginfo.candidates(real, facts.build_id, facts.debuglink):
            if os.path.isfile(cand.path):
                return Origin(key, identity(cand.path))
    except (OSError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------
# The DWARF, loaded
# --------------------------------------------------------------------------

class DebugFile:
    """The DWARF of one file (pyelftools' ``DWARFInfo``), and its variables
    by name: from the cache's index, a name table, or the scan.

    Attributes:
        path: the file named; ``debug_path`` the file the DWARF is in.
        source: :func:`identity` of ``debug_path`` when it was read.
        dwarf: pyelftools' ``DWARFInfo``.
        store: the cache's :class:`~perfbp.symbols.dwarf_cache.Store` for
            this DWARF, or None (set by :func:`store_for`'s caller).
    """

    def __init__(self, path: str, debug_path: str, dwarf, tables: "dict[str, bytes]") -> None:
        self.path = path
        self.debug_path = debug_path
        self.dwarf = dwarf
        self.little_endian = dwarf.config.little_endian
        self.source = identity(debug_path)
        self.store: Optional[dwarf_cache.Store] = None
        self.debug_key: "Optional[tuple[str, int, int, int]]" = None  # a separate file's
        self.complete_types: "Optional[dict[tuple[str, str], object]]" = None
        self._tables = tables
        self._table: "Optional[NameTable] | bool" = False  # False: not read yet
        self._index: "Optional[dict[str, list]]" = None

    def entries(self, name: str) -> list:
        """The variables called ``name`` at file scope: from the full
        index when it is at hand (the cache's, or built); else from the
        units a name table (one that covers every unit) gives for it, when
        they hold its external definition; else from the full index built
        now (and kept in the cache).

        A table's units are not all the units that name a variable: gdb's
        tables list a global once, in the first unit that mentions it (a
        declaration, maybe), and a ``static`` of two files in one of them.
        But a linked program has one external definition of a name (the
        linker's one-definition rule), and that is what a lookup uses when
        there is one: found through the table, it is the scan's answer.  A
        ``static`` or a declaration alone needs every unit: the full index."""
        from .dwarf_index import ScanError, Variable, scan_units

        if self._index is None and (self.store is None or self.store.names is None):
            table = self.name_table()
            try:
                units = table.lookup(name) if table is not None else None
            except (ValueError, struct.error, IndexError, KeyError):
                units = None  # a damaged table: the full index answers
            if units:
                try:
                    found = scan_units(self.dwarf, units).get(name)
                except ScanError:
                    found = None
                if found and any(v.definition and v.external for v in found):
                    return found
        return [Variable(*v) for v in self.index().get(name, ())]

    def index(self) -> "dict[str, list]":
        """Every variable at file scope by name: the cache's index, or the
        scan's (then stored in the cache)."""
        from .dwarf_index import variable_index

        if self._index is None:
            names = self.store.names if self.store is not None else None
            self._index = variable_index(self.dwarf) if names is None else names
        if self.store is not None and self.store.names is None:
            self.store.set_names(self._index)
        return self._index

    def name_table(self) -> Optional[NameTable]:
        """The file's name table, if it has one that decodes and covers
        every unit that can hold variables; else None."""
        from .dwarf_accel import name_table
        from .dwarf_index import ScanError, unit_offsets

        if self._table is False:
            self._table = None
            strings = _section_bytes(self.dwarf.debug_str_sec)
            try:
                table = name_table(self._tables, strings, self.little_endian)
                if table is not None and table.units >= unit_offsets(self.dwarf):
                    self._table = table
            except (ValueError, ScanError):
                pass
        return self._table  # type: ignore[return-value]


def _section_bytes(sec) -> bytes:
    if sec is None:
        return b""
    sec.stream.seek(0)
    return sec.stream.read()


def load(path: str) -> DebugFile:
    """The DWARF of ``path`` (kept in memory while the file is unchanged).

    Raises:
        SymbolNotFound: the file cannot be read, is not ELF, or has no DWARF.
    """
    from elftools.common.exceptions import DWARFError, ELFError

    try:
        key = file_key(path)
    except OSError as exc:
        raise SymbolNotFound(f"cannot read the debug information of {path}: "
                             f"{exc.strerror}; give the program's path", path=path) from None
    try:
        debug = _load(key)
        if debug.debug_key is not None and _stale(debug.debug_key):
            _load.cache_clear()  # the separate debug file changed: rare
            debug = _load(key)
        return debug
    except (ELFError, DWARFError, ValueError, KeyError, IndexError, struct.error) as exc:
        raise SymbolNotFound(f"cannot read the debug information of {path}: {exc}; "
                             f"watch by address instead", path=path) from None
    except OSError as exc:
        if isinstance(exc, SymbolNotFound):
            raise
        raise SymbolNotFound(f"cannot read the debug information of {path}: "
                             f"{exc.strerror or exc}", path=path) from None


@lru_cache(maxsize=16)
def _load(key: "tuple[str, int, int, int]") -> DebugFile:
    from elftools.elf.elffile import ELFFile

    from .dwarf_accel import SECTIONS as NAME_TABLES

    path = key[0]
    debug_path = file_with(path, "dwarf")
    if not debug_facts(debug_path).dwarf:
        raise SymbolNotFound(f"{path} has no DWARF debug information: rebuild with -g, or "
                             f"watch by address", path=path)
    with open_regular(debug_path) as f:
        # pyelftools copies each DWARF section out of the file (the rest of
        # it is not read): nothing is kept open
        elf = ELFFile(f)
        tables = {}
        for name in NAME_TABLES:
            sec = elf.get_section_by_name(name)
            if sec is not None and sec["sh_type"] != "SHT_NOBITS":
                tables[name] = sec.data()
        # only an object file (ET_REL) has relocations against its DWARF:
        # looking for them costs 25 ms in libpython
        dwarf = elf.get_dwarf_info(relocate_dwarf_sections=elf["e_type"] == "ET_REL",
                                   follow_links=False)
    debug = DebugFile(path, debug_path, dwarf, tables)
    debug.debug_key = file_key(debug_path) if debug_path != path else None
    return debug


def _stale(key: "tuple[str, int, int, int]") -> bool:
    try:
        return file_key(key[0]) != key
    except OSError:
        return True


# --------------------------------------------------------------------------
# The cache's stores, once per process
# --------------------------------------------------------------------------

_STORES: "dict[tuple[Optional[str], str], dwarf_cache.Store]" = {}


def store_for(key: str, source: str) -> dwarf_cache.Store:
    """The store of ``key`` for the DWARF in ``source``: the one read before
    in this process, else the cache's, else a new one (also when the cache's
    was made from another source: it does not apply)."""
    directory = dwarf_cache.cache_dir()
    store = _STORES.get((directory, key))
    if store is None:
        store = dwarf_cache.load(key, directory)
    if store is None or store.source != source:
        store = dwarf_cache.Store(key, source)
    _STORES[(directory, key)] = store
    return store


def remember(store: dwarf_cache.Store) -> None:
    """Write ``store`` to the cache (nothing when the cache is off or
    cannot be written)."""
    dwarf_cache.save(store)
