"""Separate debug files: where the symbols and DWARF of a stripped object are.

Distributions ship programs and libraries stripped, and their symbol
tables and DWARF in separate files: ``objcopy --only-keep-debug`` makes
one, ``strip`` removes them from the object, and ``objcopy
--add-gnu-debuglink`` leaves the object the debug file's name and CRC-32.
This module knows where such a file may be, in the order they are tried
(gdb's order, then the debuginfod client's cache):

1. **By build-id** under each debug root (:data:`DEBUG_ROOTS`,
   ``/usr/lib/debug``): ``ROOT/.build-id/XX/YYYY.debug``, where ``XX`` is
   the build-id's first byte in hex and ``YYYY`` the rest.  Debian's
   ``-dbgsym`` and Fedora's ``-debuginfo`` packages install there.
2. **By** ``.gnu_debuglink`` (its CRC-32 checked): ``DIR/NAME``,
   ``DIR/.debug/NAME`` and ``ROOT/DIR/NAME``, where ``DIR`` is the
   directory of the object (its real path).
3. **The debuginfod client's cache**, by build-id:
   ``CACHE/BUILDID/debuginfo``, where ``CACHE`` is
   ``$DEBUGINFOD_CACHE_PATH``, else ``~/.debuginfod_client_cache`` if it
   exists, else ``$XDG_CACHE_HOME/debuginfod_client``, else
   ``~/.cache/debuginfod_client`` (elfutils' rules).  Nothing is
   downloaded: what ``debuginfod-find``, gdb or perf fetched is used.

The first candidate that is a regular file, matches the debuglink's CRC
when it was found by name, and is accepted by the caller (who reads its ELF
headers: :func:`perfbp.symbols.elf.debug_file` checks that its build-id is
the object's and that it holds a symbol table or DWARF) is the debug file.

Pure Python over files, and no ELF: the facts of the object (build-id,
debuglink) come from the caller.
"""

from __future__ import annotations

import os
import stat
import zlib
from functools import lru_cache
from typing import Callable, NamedTuple, Optional

from ..kernel.system import open_regular

__all__ = ["DEBUG_ROOTS", "Candidate", "candidates", "debuginfod_cache", "find", "places"]

#: The debug roots, gdb's ``debug-file-directory``: the only setting, kept
#: internal (tests point it at a directory of their own).
DEBUG_ROOTS: "tuple[str, ...]" = ("/usr/lib/debug",)


class Candidate(NamedTuple):
    """A place a separate debug file may be.

    Attributes:
        path: the file.
        crc: the CRC-32 the object's ``.gnu_debuglink`` gives, which the
            file must have; None for a place found by build-id.
        how: ``build-id``, ``debuglink`` or ``debuginfod``.
    """

    path: str
    crc: Optional[int]
    how: str


def debuginfod_cache(env: "dict[str, str] | None" = None) -> str:
    """The debuginfod client's cache directory, as elfutils' client finds it:
    ``$DEBUGINFOD_CACHE_PATH``; else ``$HOME/.debuginfod_client_cache`` when
    it exists (the old default); else ``$XDG_CACHE_HOME/debuginfod_client``;
    else ``$HOME/.cache/debuginfod_client`` (``/`` for a missing HOME)."""
    env = os.environ if env is None else env
    if env.get("DEBUGINFOD_CACHE_PATH"):
        return env["DEBUGINFOD_CACHE_PATH"]
    home = env.get("HOME") or "/"
    legacy = os.path.join(home, ".debuginfod_client_cache")
    if os.path.exists(legacy):
        return legacy
    if env.get("XDG_CACHE_HOME"):
        return os.path.join(env["XDG_CACHE_HOME"], "debuginfod_client")
    return os.path.join(home, ".cache", "debuginfod_client")


def candidates(path: str, build_id: Optional[str],
               debuglink: "Optional[tuple[str, int]]") -> "list[Candidate]":
    """The places a separate debug file of the object at ``path`` (its real
    path) may be, in the order they are tried (see the module's doc).

    Args:
        build_id: the object's ``NT_GNU_BUILD_ID`` in hex, or None.
        debuglink: the ``.gnu_debuglink`` file name and CRC-32, or None.
    """
    out: list[Candidate] = []
    if build_id and len(build_id) > 2:
        out += [Candidate(f"{root}/.build-id/{build_id[:2]}/{build_id[2:]}.debug", None,
                          "build-id") for root in DEBUG_ROOTS]
    if debuglink is not None and debuglink[0] and "/" not in debuglink[0]:
        name, crc = debuglink
        here = os.path.dirname(path)
        for d in (here, os.path.join(here, ".debug"), *(root + here for root in DEBUG_ROOTS)):
            out.append(Candidate(os.path.join(d, name), crc, "debuglink"))
    if build_id:
        out.append(Candidate(os.path.join(debuginfod_cache(), build_id, "debuginfo"), None,
                             "debuginfod"))
    return [c for c in out if os.path.realpath(c.path) != path]


def find(path: str, build_id: Optional[str], debuglink: "Optional[tuple[str, int]]",
         accept: "Callable[[str], bool]") -> Optional[Candidate]:
    """The separate debug file of the object at ``path``: the first of
    :func:`candidates` that is a regular file, has the debuglink's CRC-32
    when it is found by name, and that ``accept`` takes; None when none
    does.  A candidate that cannot be read counts as absent, as in gdb.

    The places are looked at on every call (a few ``stat`` calls): a debug
    package installed while perfbp runs is found; what was read of a file
    is kept while the file is unchanged."""
    for cand in candidates(path, build_id, debuglink):
        try:
            st = os.stat(cand.path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if cand.how == "debuginfod" and st.st_uid not in (0, os.geteuid()):
            # the cache comes from HOME or the environment: root run with a
            # user's (sudo -E) must not take that user's word for a program
            continue
        if cand.crc is not None and _crc32(os.path.realpath(cand.path), st.st_ino,
                                           st.st_size, st.st_mtime_ns) != cand.crc:
            continue
        if accept(cand.path):
            return cand
    return None


def places(path: str, build_id: Optional[str],
           debuglink: "Optional[tuple[str, int]]") -> str:
    """Where :func:`find` looks, in words, for a message ("" when it has
    nothing to look by)."""
    shown: list[str] = []
    for cand in candidates(path, build_id, debuglink):
        if cand.how != "debuglink":
            shown.append(cand.path)
        elif not any(s.startswith(f"{debuglink[0]} ") for s in shown):  # the first, for all
            shown.append(f"{debuglink[0]} (its .gnu_debuglink) beside it, in .debug/ and "
                         f"under {' and '.join(DEBUG_ROOTS)}")
    return ", ".join(shown)


@lru_cache(maxsize=64)
def _crc32(path: str, _ino: int, _size: int, _mtime: int) -> Optional[int]:
    """The CRC-32 of a whole file (``.gnu_debuglink``'s checksum), read in
    1 MiB blocks; None when it cannot be read."""
    crc = 0
    try:
        with open_regular(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                crc = zlib.crc32(block, crc)
    except OSError:
        return None
    return crc
