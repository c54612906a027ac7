"""The on-disk cache of what the DWARF of a file says: its variables by name,
and the members already resolved in it.

Finding ``_PyRuntime.ceval.gil.switch_number`` in libpython means indexing
9 MB of .debug_info (0.15 s, :mod:`perfbp.symbols.dwarf_index`) and walking
the type with pyelftools (0.1 s) on every run.  A file's index and its
resolved members are kept instead, one cache file per ELF file, under
``$XDG_CACHE_HOME/perfbp/dwarf/`` (``~/.cache/perfbp/dwarf/`` when
``XDG_CACHE_HOME`` is unset or not an absolute path, as the XDG base
directory specification says).  ``PERFBP_NO_CACHE=1`` turns the cache off
(nothing is read or written).

**Keys.**  A cache file belongs to the file's GNU build-id (a hash the
linker computes over the output): a member's offset and size are the same
in every file of one build, so a copy or a stripped file reuses them.  A
file without a build-id is keyed by its real path, size and mtime.  The
variable index holds DIE offsets, which ``dwz``, ``objcopy`` or
``gdb-add-index`` change without changing the build-id, so it is used only
while the file it was read from (its ``source``: path, size, mtime) is
unchanged; otherwise it is rebuilt and the members kept.

**Safety.**  A cache file is written whole to a temporary file in the same
directory and renamed over the old one (``rename`` is atomic), so a reader
sees the old file or the new one, never a mix, whatever other runs do at
the same time; two runs that add different members at once may lose one of
them, which the next run resolves again.  A cache file is read only after
it is checked whole: magic, version, key, every size against the file's
length, every count and bound, and a CRC-32 of everything; one that fails a
check is ignored and replaced.  A cache directory that cannot be created or
written (a read-only home, another user's) means no cache, never an error;
a directory owned by another user is not used at all (its files could
steer a run as root), and root running with another user's HOME creates
nothing there.  At most :data:`MAX_FILES` files are kept, the
oldest removed first.

The layouts below (:data:`HEADER`, :data:`ENTRY`, :data:`MEMBER`) are the
whole file format, little-endian::

    HEADER
    key          key_size bytes, UTF-8
    source       source_size bytes, UTF-8
    names        names_size bytes: n_names names, each ended by a NUL
                 (with the counts and entries: only under HAS_NAMES)
    counts       n_names x u32: how many ENTRY records each name has
    entries      n_entries x ENTRY, in the names' order
    members      members_size bytes: MEMBER records, each followed by its
                 expression, variable and type name (UTF-8)

Pure Python over files; no kernel.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from typing import NamedTuple, Optional

__all__ = ["CachedMember", "Store", "cache_dir", "load", "save", "MAX_FILES"]

MAGIC = b"perfbpDX"
VERSION = 1
HAS_NAMES = 1  # a flag of the header: the variable index is present
#: The file's header: ``(field, struct code)``.
HEADER = (("magic", "8s"), ("version", "H"), ("flags", "H"), ("key_size", "I"),
          ("source_size", "I"), ("names_size", "I"), ("n_names", "I"), ("n_entries", "I"),
          ("members_size", "I"), ("checksum", "I"))
#: One variable of the index: its DIE's offset and :data:`DEFINITION` | :data:`EXTERNAL`.
ENTRY = (("offset", "Q"), ("flags", "B"))
#: One resolved member; its three strings follow it.
MEMBER = (("offset", "Q"), ("size", "Q"), ("bitfield", "B"), ("expr_size", "H"),
          ("variable_size", "H"), ("type_size", "H"))
DEFINITION, EXTERNAL = 1, 2
MAX_FILES = 256
MAX_SIZE = 1 << 28  # a larger file is not read: it is not one of ours
TEMP_AGE = 3600     # seconds after which a temporary file is a crashed run's

_HEADER = struct.Struct("<" + "".join(code for _f, code in HEADER))
_ENTRY = struct.Struct("<" + "".join(code for _f, code in ENTRY))
_MEMBER = struct.Struct("<" + "".join(code for _f, code in MEMBER))


class CachedMember(NamedTuple):
    """A member as resolved before (the fields of :class:`perfbp.symbols.dwarf.Member`
    but its expression, which is the caller's)."""

    variable: str
    offset: int
    size: int
    type_name: str
    bitfield: bool


class Store:
    """What the cache holds for one file's DWARF, as read or as built.

    Attributes:
        key: the file's key (``build-id:HEX`` or ``file:PATH:SIZE:MTIME``).
        source: the identity (``PATH:SIZE:MTIME``) of the file the DWARF
            was read from: the store applies only to that DWARF.
        members: resolved members by their canonical expression.
        names: ``{name: [(DIE offset, definition, external)]}``, or None
            when there is no index yet (decoded from the file on first use).
        dirty: changed since read or written.
    """

    def __init__(self, key: str, source: str,
                 names: "Optional[dict[str, list[tuple[int, bool, bool]]]]" = None,
                 members: "Optional[dict[str, CachedMember]]" = None) -> None:
        self.key = key
        self.source = source
        self._names = names
        self._raw: "Optional[tuple[bytes, int, int, int, int]]" = None
        self.members = dict(members or {})
        self.dirty = False

    @property
    def names(self) -> "Optional[dict[str, list[tuple[int, bool, bool]]]]":
        if self._names is None and self._raw is not None:
            self._names = _decode_names(*self._raw)
            self._raw = None
        return self._names

    def set_names(self, names: "dict[str, list[tuple[int, bool, bool]]]") -> None:
        self._names, self._raw, self.dirty = names, None, True

    def add_member(self, expr: str, member: CachedMember) -> None:
        self.members[expr] = member
        self.dirty = True


# --------------------------------------------------------------------------
# Where
# --------------------------------------------------------------------------

def cache_dir() -> Optional[str]:
    """The directory of the DWARF cache, or None when the cache is off
    (``PERFBP_NO_CACHE`` set and not ``0``) or no home is known."""
    if os.environ.get("PERFBP_NO_CACHE", "0") not in ("", "0"):
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "perfbp", "dwarf")


def file_name(key: str) -> str:
    """The cache file's name for ``key``: the build-id itself, or two
    checksums of the path key (a collision is a key mismatch: a rebuild)."""
    if key.startswith("build-id:") and key[9:].isalnum():
        return key[9:] + ".idx"
    raw = key.encode("utf-8", "surrogateescape")
    return f"file-{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}.idx"


def _ours(directory: str) -> bool:
    """Whether ``directory`` is a directory of this user (root's is root's)."""
    try:
        st = os.stat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def _may_create(directory: str) -> bool:
    """Whether this user may create ``directory``'s missing parts: its
    nearest existing ancestor is this user's or root's (root running with
    another user's HOME leaves nothing of its own in that home)."""
    path = directory
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    try:
        return os.stat(path).st_uid in (os.geteuid(), 0)
    except OSError:
        return False


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def load(key: str, directory: "Optional[str]" = None) -> Optional[Store]:
    """The store of ``key``, or None when the cache is off, has none, or its
    file fails a check (the caller rebuilds it)."""
    directory = directory or cache_dir()
    if directory is None or not _ours(directory):
        return None
    path = os.path.join(directory, file_name(key))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() \
                or not _HEADER.size <= st.st_size <= MAX_SIZE:
            return None
        data = os.read(fd, st.st_size)
    except OSError:
        return None
    finally:
        os.close(fd)
    return decode(data, key)


def decode(data: bytes, key: str) -> Optional[Store]:
    """The store in ``data`` (a cache file's bytes) if every check passes:
    magic, version, key, sizes, counts, bounds and checksum; else None."""
    if len(data) < _HEADER.size:
        return None
    (magic, version, flags, key_size, source_size, names_size, n_names, n_entries,
     members_size, checksum) = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or flags & ~HAS_NAMES:
        return None
    sizes = (key_size, source_size, names_size, 4 * n_names, _ENTRY.size * n_entries,
             members_size)
    if _HEADER.size + sum(sizes) != len(data):
        return None
    if zlib.crc32(data[_HEADER.size:], zlib.crc32(data[:_HEADER.size - 4])) != checksum:
        return None
    pos = _HEADER.size
    try:
        if data[pos:pos + key_size].decode("utf-8", "surrogateescape") != key:
            return None
        pos += key_size
        source = data[pos:pos + source_size].decode("utf-8", "surrogateescape")
    except UnicodeDecodeError:
        return None
    pos += source_size
    names_at, counts_at = pos, pos + names_size
    entries_at = counts_at + 4 * n_names
    members_at = entries_at + _ENTRY.size * n_entries
    if not _names_are_sound(data, names_at, counts_at, entries_at, members_at, n_names,
                            n_entries, bool(flags & HAS_NAMES)):
        return None
    members = _decode_members(data, members_at, len(data))
    if members is None:
        return None
    store = Store(key, source, members=members)
    if flags & HAS_NAMES:
        store._raw = (data, names_at, counts_at, entries_at, n_names)
    return store


def _names_are_sound(data: bytes, names_at: int, counts_at: int, entries_at: int,
                     end: int, n_names: int, n_entries: int, present: bool) -> bool:
    """The index's sections agree with each other and the header (all
    without decoding a name: that waits until one is looked up)."""
    names = data[names_at:counts_at]
    if not present:
        return not names and n_names == 0 and n_entries == 0
    if names.count(b"\0") != n_names or (names and names[-1:] != b"\0") \
            or b"\0\0" in names or names[:1] == b"\0":
        return False
    counts = _counts(data, counts_at, n_names)
    if n_names and (min(counts) < 1 or sum(counts) != n_entries):
        return False
    flags = data[entries_at + _ENTRY.size - 1:end:_ENTRY.size]  # each entry's last byte
    return not flags or max(flags) <= DEFINITION | EXTERNAL


def _counts(data: bytes, at: int, n: int) -> "tuple[int, ...]":
    return struct.unpack_from(f"<{n}I", data, at)


def _decode_names(data: bytes, names_at: int, counts_at: int, entries_at: int,
                  n_names: int) -> "dict[str, list[tuple[int, bool, bool]]]":
    names = data[names_at:counts_at].decode("utf-8", "replace").split("\0")[:n_names]
    counts = _counts(data, counts_at, n_names)
    entries = [(offset, bool(f & DEFINITION), bool(f & EXTERNAL))
               for offset, f in _ENTRY.iter_unpack(data[entries_at:entries_at
                                                        + _ENTRY.size * sum(counts)])]
    out, i = {}, 0
    for name, n in zip(names, counts):
        out[name] = entries[i:i + n]
        i += n
    return out


def _decode_members(data: bytes, pos: int, end: int) -> "Optional[dict[str, CachedMember]]":
    members = {}
    try:
        while pos < end:
            offset, size, bitfield, n_expr, n_var, n_type = _MEMBER.unpack_from(data, pos)
            pos += _MEMBER.size
            strings_end = pos + n_expr + n_var + n_type
            if strings_end > end or bitfield > 1:
                return None
            raw = data[pos:strings_end]
            expr = raw[:n_expr].decode("utf-8")
            variable = raw[n_expr:n_expr + n_var].decode("utf-8")
            type_name = raw[n_expr + n_var:].decode("utf-8")
            members[expr] = CachedMember(variable, offset, size, type_name, bool(bitfield))
            pos = strings_end
    except (struct.error, UnicodeDecodeError):
        return None
    return members if pos == end else None


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def encode(store: Store) -> bytes:
    """The bytes of ``store``'s cache file."""
    key = store.key.encode("utf-8", "surrogateescape")
    names = store.names
    source = store.source.encode("utf-8", "surrogateescape")
    order = sorted(names) if names is not None else []
    blob = b"".join(n.encode("utf-8") + b"\0" for n in order)
    counts = struct.pack(f"<{len(order)}I", *(len(names[n]) for n in order))
    entries = b"".join(_ENTRY.pack(offset, DEFINITION * bool(d) | EXTERNAL * bool(e))
                       for n in order for offset, d, e in names[n])
    members = b"".join(
        _MEMBER.pack(m.offset, m.size, int(m.bitfield), len(x), len(v), len(t)) + x + v + t
        for expr, m in sorted(store.members.items())
        for x, v, t in [(expr.encode(), m.variable.encode(), m.type_name.encode())]
        if max(len(x), len(v), len(t)) <= 0xFFFF and m.offset < 1 << 64 and m.size < 1 << 64)
    body = key + source + blob + counts + entries + members
    flags = HAS_NAMES if names is not None else 0
    head = _HEADER.pack(MAGIC, VERSION, flags, len(key), len(source), len(blob), len(order),
                        len(entries) // _ENTRY.size, len(members), 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def save(store: Store, directory: "Optional[str]" = None) -> bool:
    """Write ``store`` (atomically: a temporary file renamed over the old
    one); False when the cache is off or cannot be written."""
    directory = directory or cache_dir()
    if directory is None:
        return False
    try:
        if not os.path.isdir(directory) and _may_create(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _ours(directory):
            return False
        final = os.path.join(directory, file_name(store.key))
        fresh = not os.path.exists(final)
        temp = f"{final}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(encode(store))
            os.replace(temp, final)
            store.dirty = False
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
    except OSError:
        return False
    if fresh:
        prune(directory)
    return True


def prune(directory: str, keep: int = MAX_FILES) -> None:
    """Remove the oldest cache files beyond ``keep``, and temporary files
    that crashed runs left (older than :data:`TEMP_AGE` seconds)."""
    import time

    try:
        entries = [(e.stat().st_mtime, e.path, e.name) for e in os.scandir(directory)
                   if e.is_file(follow_symlinks=False)]
    except OSError:
        return
    now = time.time()
    doomed = [p for m, p, n in entries if n.endswith(".tmp") and now - m > TEMP_AGE]
    caches = sorted((m, p) for m, p, n in entries if n.endswith(".idx"))
    doomed += [p for _m, p in caches[:max(len(caches) - keep, 0)]]
    for p in doomed:
        try:
            os.unlink(p)
        except OSError:
            pass
