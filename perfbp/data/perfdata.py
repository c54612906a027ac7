"""perf.data files: perf's own recording format, written and read.

Written in **file mode** (``PERFILE2`` header, attrs with their event ids,
the data section, then feature sections), not pipe mode: file mode is what
``perf report -i`` and ``perf script -i`` read by default, it carries every
attr and its ids in the header (so records can be routed to watches without
scanning the stream first), and it takes perf's feature sections (command
line, host, CPUs, event names) at the end.  File mode's weakness is that the
header's ``data.size`` is only right once the recording is finished; perfbp
rewrites it with ``pwrite`` after every batch of records, so a recording cut
short (perfbp killed, disk full) is still a valid perf.data file holding
every batch written before the cut.

Readers here take perfbp's files and perf's own, in file mode or pipe mode
(``perf record -o -``).  They read the header, attrs and feature sections, and
leave the data section on disk: :meth:`Recording.chunks` reads it in windows
of whole records, so that reading a recording costs the same memory whatever
its length.  The layouts follow
``tools/perf/Documentation/perf.data-file-format.txt``.
"""

from __future__ import annotations

import errno as E
import os
import struct
from dataclasses import dataclass, field
from typing import NamedTuple
from typing import Iterator

from .._version import __version__ as version
from ..kernel._uapi import PERF_FORMAT_LOST, PERF_SAMPLE_RAW, PERF_SAMPLE_REGS_USER
from ..errors import CorruptRecording, PerfbpError
from ..kernel.records import HEADER, VALUES_RAW, ParseConfig, whole_records_end

MAGIC = b"PERFILE2"
FILE_HEADER = struct.Struct("<8sQQQQQQQQ32s")  # 104 bytes
FILE_HEADER_SIZE = FILE_HEADER.size
PIPE_HEADER = struct.Struct("<8sQ")  # magic, size (16) in pipe mode
SECTION = struct.Struct("<QQ")

#: attr.size written into files: PERF_ATTR_SIZE_VER7 (sig_data).  perf
#: refuses an attr larger than the one it was built with, and Debian's perf
#: 6.1 knows 128 bytes; perfbp never sets the later fields.
FILE_ATTR_SIZE = 128

# tools/perf/util/event.h: records perf itself adds to a stream
PERF_RECORD_HEADER_ATTR = 64
PERF_RECORD_HEADER_EVENT_TYPE = 65
PERF_RECORD_HEADER_TRACING_DATA = 66
PERF_RECORD_HEADER_BUILD_ID = 67
PERF_RECORD_FINISHED_ROUND = 68
PERF_RECORD_ID_INDEX = 69
PERF_RECORD_THREAD_MAP = 73
PERF_RECORD_CPU_MAP = 74
PERF_RECORD_EVENT_UPDATE = 78
PERF_RECORD_TIME_CONV = 79
PERF_RECORD_HEADER_FEATURE = 80
PERF_RECORD_COMPRESSED = 81
PERF_RECORD_FINISHED_INIT = 82
PERF_EVENT_UPDATE__NAME = 2  # tools/lib/perf/include/perf/event.h

# tools/perf/util/header.h: feature bits
HEADER_BUILD_ID = 2
HEADER_HOSTNAME = 3
HEADER_OSRELEASE = 4
HEADER_VERSION = 5
HEADER_ARCH = 6
HEADER_NRCPUS = 7
HEADER_CMDLINE = 11
HEADER_EVENT_DESC = 12
#: perfbp's own feature: JSON describing the watches (labels, pieces) and,
#: for a multiplexed recording, each watch's coverage and estimate.  perf
#: skips feature bits it does not know.
HEADER_PERFBP = 255
#: In pipe mode perfbp's feature cannot be a HEADER_FEATURE record (perf
#: stops at a feature it does not know); it travels in a
#: PERF_RECORD_HEADER_EVENT_TYPE record, which perf skips whole (deprecated
#: since perf 3.x, "handled for the sake of old pipe-mode files"), whose
#: event_id is this mark ("perfbp" and 1).
PERFBP_META_MARK = 0x7065726662700001
_U64 = struct.Struct("<Q")
#: ``struct perf_record_header_build_id`` (tools/perf/util/event.h) before its
#: file name: the header (type, misc, size), pid, the build-id's 20 bytes,
#: its length and 3 reserved bytes.
BUILD_ID_EVENT = struct.Struct("<IHHi20sB3x")
PERF_RECORD_MISC_USER = 2
PERF_RECORD_MISC_CPUMODE_MASK = 7
PERF_RECORD_MISC_BUILD_ID_SIZE = 1 << 15
HOST_KERNEL_ID = -1  # tools/perf/util/machine.h: the pid of the host's machine


class BuildId(NamedTuple):
    """One entry of a recording's build-id table.

    Attributes:
        path: the object's path, as its mapping records name it.
        build_id: its ``NT_GNU_BUILD_ID`` in hex.
        misc: the cpumode (``PERF_RECORD_MISC_USER``, ``_KERNEL``).
    """

    path: str
    build_id: str
    misc: int = PERF_RECORD_MISC_USER


def build_id_records(entries: "list[BuildId]", rtype: int = 0) -> bytes:
    """perf's build-id table (the HEADER_BUILD_ID feature; with ``rtype``
    PERF_RECORD_HEADER_BUILD_ID, the records of a pipe-mode stream), as
    perf's ``write_buildid`` writes it: one ``perf_record_header_build_id``
    an object, for the host (pid -1), its length in the record
    (``PERF_RECORD_MISC_BUILD_ID_SIZE``), then the path, NUL-terminated and
    padded to a multiple of 8 bytes."""
    out = bytearray()
    for e in entries:
        raw = bytes.fromhex(e.build_id)[:20]
        name = e.path.encode("utf-8", "surrogateescape") + b"\0"
        name += b"\0" * (-len(name) % 8)
        out += BUILD_ID_EVENT.pack(rtype, e.misc | PERF_RECORD_MISC_BUILD_ID_SIZE,
                                   BUILD_ID_EVENT.size + len(name), HOST_KERNEL_ID, raw,
                                   len(raw)) + name
    return bytes(out)


def parse_build_ids(raw: bytes) -> "list[BuildId]":
    """The entries of a build-id table (perf's or perfbp's); what follows a
    damaged entry is left out.  An entry without
    ``PERF_RECORD_MISC_BUILD_ID_SIZE`` (perf before 5.11) holds 20 bytes."""
    out: list[BuildId] = []
    pos = 0
    while pos + BUILD_ID_EVENT.size <= len(raw):
        _t, misc, size, _pid, data, length = BUILD_ID_EVENT.unpack_from(raw, pos)
        if size < BUILD_ID_EVENT.size or pos + size > len(raw):
            break
        name = raw[pos + BUILD_ID_EVENT.size:pos + size].split(b"\0", 1)[0]
        length = min(length, 20) if misc & PERF_RECORD_MISC_BUILD_ID_SIZE else 20
        out.append(BuildId(name.decode("utf-8", "surrogateescape"), data[:length].hex(),
                           misc & PERF_RECORD_MISC_CPUMODE_MASK))
        pos += size
    return out


def _header_string(text: str) -> bytes:
    """``struct perf_header_string``: u32 len, then the string, NUL-padded to
    a multiple of 64 bytes (perf's NAME_ALIGN)."""
    raw = text.encode() + b"\0"
    padded = (len(raw) + 63) // 64 * 64
    return struct.pack("<I", padded) + raw.ljust(padded, b"\0")


def _string_list(items: "list[str]") -> bytes:
    return struct.pack("<I", len(items)) + b"".join(_header_string(s) for s in items)


def attr_for_file(attr_bytes: bytes) -> bytes:
    """An attr as written into a file: cut to :data:`FILE_ATTR_SIZE` bytes with
    ``size`` rewritten to match."""
    raw = bytearray(attr_bytes[:FILE_ATTR_SIZE].ljust(FILE_ATTR_SIZE, b"\0"))
    if any(attr_bytes[FILE_ATTR_SIZE:]):
        raise PerfbpError("attr uses fields newer than perf.data readers know (config3/aux)")
    struct.pack_into("<I", raw, 4, FILE_ATTR_SIZE)
    return bytes(raw)


@dataclass(frozen=True)
class FileEvent:
    """One event (attr) of a recording, with its ids and name."""

    attr: bytes
    ids: "tuple[int, ...]"
    name: str

    @property
    def is_breakpoint(self) -> bool:
        """Whether the event is a watch (PERF_TYPE_BREAKPOINT), not one of
        the others a recording may hold beside them (perf's cycles, the
        ``dummy:u`` event that carries thread and mapping records)."""
        from ..kernel._uapi import PERF_TYPE_BREAKPOINT

        return FileAttr.decode(self.attr).type == PERF_TYPE_BREAKPOINT


class PerfDataWriter:
    """Write a perf.data file (file mode) incrementally.

    The file is created new (``O_EXCL``, mode 0600), never through a symlink;
    an existing regular file at the path is first renamed to ``PATH.old``, as
    perf does, so no earlier recording is lost.

    Raises:
        PerfbpError: the path cannot be written (with the reason and the fix).
    """

    def __init__(self, path: str, events: "list[FileEvent]") -> None:
        self.path = path
        self.events = events
        self.fd = create_output(path)
        attrs_off = FILE_HEADER_SIZE
        attr_entry = FILE_ATTR_SIZE + SECTION.size
        ids_off = attrs_off + attr_entry * len(events)
        table = bytearray()
        ids_blob = bytearray()
        for ev in events:
            ids_raw = struct.pack(f"<{len(ev.ids)}Q", *ev.ids)
            table += attr_for_file(ev.attr) + SECTION.pack(ids_off + len(ids_blob), len(ids_raw))
            ids_blob += ids_raw
        self.attrs_section = (attrs_off, len(table))
        self.data_offset = ids_off + len(ids_blob)
        self.data_size = 0
        self._write_all(self._header(b"\0" * 32), 0)
        self._write_all(bytes(table) + bytes(ids_blob), attrs_off)
        self._pos = self.data_offset
        self.closed = False

    def _header(self, features: bytes) -> bytes:
        return FILE_HEADER.pack(MAGIC, FILE_HEADER_SIZE, FILE_ATTR_SIZE + SECTION.size,
                                self.attrs_section[0], self.attrs_section[1],
                                self.data_offset, self.data_size, 0, 0, features)

    def _write_all(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.pwrite(self.fd, view, offset)
            except OSError as exc:
                raise PerfbpError(f"cannot write {self.path}: {exc.strerror}; the "
                                  f"recording holds everything up to the last complete "
                                  f"batch", errno=exc.errno) from None
            view = view[n:]
            offset += n

    def write(self, records: bytes) -> None:
        """Append whole records, then make the header cover them."""
        if not records:
            return
        try:
            self._write_all(records, self._pos)
        except PerfbpError:
            # a batch cut by a full disk: drop its part, so that the file is
            # exactly the header and the batches before (what perf reads)
            try:
                os.ftruncate(self.fd, self._pos)
            except OSError:
                pass
            raise
        self._pos += len(records)
        self.data_size += len(records)
        # the header now covers the new records: a cut after this point
        # leaves a valid file
        self._write_all(struct.pack("<Q", self.data_size), 48)

    def finish(self, *, cmdline: "list[str]", nr_cpus: "tuple[int, int]",
               meta: "dict | None" = None, build_ids: "list[BuildId]" = ()) -> None:
        """Write the feature sections and the final header; close the file.
        ``build_ids``: the objects the recording maps, for HEADER_BUILD_ID."""
        if self.closed:
            return
        feats = self._features(cmdline, nr_cpus, meta)
        if build_ids:
            feats.insert(0, (HEADER_BUILD_ID, build_id_records(list(build_ids))))
        sections, bits = feature_sections(feats, self._pos)
        self._write_all(sections, self._pos)
        self._write_all(self._header(bits), 0)
        os.fsync(self.fd)
        os.close(self.fd)
        self.closed = True

    def _features(self, cmdline: "list[str]", nr_cpus: "tuple[int, int]",
                  meta: "dict | None") -> "list[tuple[int, bytes]]":
        """The feature sections, in bit order."""
        uts = os.uname()
        feats: list[tuple[int, bytes]] = [
            (HEADER_HOSTNAME, _header_string(uts.nodename)),
            (HEADER_OSRELEASE, _header_string(uts.release)),
            (HEADER_VERSION, _header_string(f"perfbp {version}")),
            (HEADER_ARCH, _header_string(uts.machine)),
            (HEADER_NRCPUS, struct.pack("<II", *nr_cpus)),
            (HEADER_CMDLINE, _string_list(cmdline)),
            (HEADER_EVENT_DESC, self._event_desc()),
        ]
        if meta is not None:
            import json
            feats.append((HEADER_PERFBP, json.dumps(meta).encode()))
        return sorted(feats)

    def _event_desc(self) -> bytes:
        out = bytearray(struct.pack("<II", len(self.events), FILE_ATTR_SIZE))
        for ev in self.events:
            out += attr_for_file(ev.attr)
            out += struct.pack("<I", len(ev.ids))
            out += _header_string(ev.name)
            out += struct.pack(f"<{len(ev.ids)}Q", *ev.ids)
        return bytes(out)

    def abandon(self) -> None:
        """Close without the feature sections (the header stays valid)."""
        if not self.closed:
            os.close(self.fd)
            self.closed = True


class PerfDataPipeWriter(PerfDataWriter):
    """Write a perf.data stream in pipe mode to a file descriptor (a pipe,
    standard output): what ``perf record -o -`` writes, and ``perf report -i -``,
    ``perf script -i -`` and ``perfbp report -i -`` read.

    The stream starts with the pipe header, one PERF_RECORD_HEADER_ATTR per
    event (attr and ids) and one PERF_RECORD_EVENT_UPDATE naming it; records
    follow as they are drained; :meth:`finish` adds the feature sections as
    PERF_RECORD_HEADER_FEATURE records, and perfbp's own in a record perf
    skips (see ``PERFBP_META_MARK``).  Nothing can be rewritten in a pipe, so
    a stream cut short simply ends.

    Raises:
        PerfbpError: the descriptor cannot be written (EPIPE: the reader is gone).
    """

    def __init__(self, fd: int, events: "list[FileEvent]", path: str = "-") -> None:
        self.path = path
        self.events = events
        self.fd = fd
        self.data_size = 0
        self.closed = False
        out = bytearray(PIPE_HEADER.pack(MAGIC, PIPE_HEADER.size))
        for ev in events:
            body = attr_for_file(ev.attr) + struct.pack(f"<{len(ev.ids)}Q", *ev.ids)
            out += HEADER.pack(PERF_RECORD_HEADER_ATTR, 0, 8 + len(body)) + body
        for ev in events:
            if ev.ids and ev.name:
                name = _header_string(ev.name)[4:]  # NUL-padded to 8 bytes
                body = struct.pack("<QQ", PERF_EVENT_UPDATE__NAME, ev.ids[0]) + name
                out += HEADER.pack(PERF_RECORD_EVENT_UPDATE, 0, 8 + len(body)) + body
        self._write_all(bytes(out), 0)

    def _write_all(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as exc:
                raise PerfbpError(f"cannot write the recording to {self.path}: "
                                  f"{exc.strerror}; the reader has every record written "
                                  f"before", errno=exc.errno) from None
            view = view[n:]

    def write(self, records: bytes) -> None:
        """Append whole records to the stream."""
        if records:
            self._write_all(records, 0)
            self.data_size += len(records)

    def finish(self, *, cmdline: "list[str]", nr_cpus: "tuple[int, int]",
               meta: "dict | None" = None, build_ids: "list[BuildId]" = ()) -> None:
        """Write the build-ids and the feature sections as records (as perf
        writes a stream); close the descriptor."""
        if self.closed:
            return
        out = bytearray(build_id_records(list(build_ids), PERF_RECORD_HEADER_BUILD_ID))
        # perf stops at a feature it does not know in a stream (in a file it
        # skips it): perfbp's own (HEADER_PERFBP) stays out of pipe mode
        for bit, data in self._features(cmdline, nr_cpus, None):
            data = data + b"\0" * (-len(data) % 8)
            out += HEADER.pack(PERF_RECORD_HEADER_FEATURE, 0, 16 + len(data))
            out += struct.pack("<Q", bit) + data
        if meta is not None:
            import json
            body = _U64.pack(PERFBP_META_MARK) + json.dumps(meta).encode()
            body += b"\0" * (-len(body) % 8)
            out += HEADER.pack(PERF_RECORD_HEADER_EVENT_TYPE, 0, 8 + len(body)) + body
        self._write_all(bytes(out), 0)
        os.close(self.fd)
        self.closed = True


def stream_extras(rec: "Recording", others: "list") -> None:
    """A stream's features and perfbp's meta, from the records at its end
    (pipe mode: a stream writes them after the data): fill ``rec.features``."""
    from ..kernel.records import Unknown

    if not rec.pipe:
        return
    for r in others:
        if not isinstance(r, Unknown) or len(r.data) < 8:
            continue
        (first,) = _U64.unpack_from(r.data, 0)
        if r.type == PERF_RECORD_HEADER_FEATURE and first < 256:
            rec.features.setdefault(first, r.data[8:])
        elif r.type == PERF_RECORD_HEADER_EVENT_TYPE and first == PERFBP_META_MARK:
            rec.features[HEADER_PERFBP] = r.data[8:].rstrip(b"\0")
        elif r.type == PERF_RECORD_HEADER_BUILD_ID:  # the table, one record an object
            rec.features[HEADER_BUILD_ID] = rec.features.get(HEADER_BUILD_ID, b"") + \
                _table_entry(r)


def _table_entry(r) -> bytes:
    """A stream's PERF_RECORD_HEADER_BUILD_ID record as an entry of the
    HEADER_BUILD_ID table."""
    return HEADER.pack(0, r.misc, HEADER.size + len(r.data)) + r.data


def feature_sections(feats: "list[tuple[int, bytes]]", table_off: int) -> "tuple[bytes, bytes]":
    """The feature table (one section a bit, in order) written at
    ``table_off`` with the sections after it, and the header's 32 bytes of
    feature bits."""
    off = table_off + SECTION.size * len(feats)
    table = bytearray()
    blob = bytearray()
    bits = 0
    for bit, data in feats:
        table += SECTION.pack(off + len(blob), len(data))
        blob += data
        bits |= 1 << bit
    return bytes(table) + bytes(blob), bits.to_bytes(32, "little")


def create_output(path: str) -> int:
    """Create ``path`` for writing: new, 0600, never through a symlink.

    An existing regular file is renamed to ``PATH.old`` first.

    Raises:
        PerfbpError: the path is a symlink, a directory, or not writable.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise PerfbpError(f"cannot write the recording to {path}: {exc.strerror}; "
                          f"choose another path with -o", errno=exc.errno) from None
    if st is not None:
        import stat as S
        if S.S_ISLNK(st.st_mode):
            raise PerfbpError(f"refusing to write the recording to {path}: it is a "
                              f"symbolic link (to {os.readlink(path)}), which perfbp does "
                              f"not follow; remove it or choose another path with -o",
                              errno=E.ELOOP)
        if S.S_ISDIR(st.st_mode):
            raise PerfbpError(f"cannot write the recording to {path}: it is a directory; "
                              f"choose a file name with -o", errno=E.EISDIR)
        if S.S_ISREG(st.st_mode):
            try:
                os.replace(path, path + ".old")
            except OSError as exc:
                raise PerfbpError(f"cannot move the earlier recording {path} aside to "
                                  f"{path}.old: {exc.strerror}; choose another path with -o",
                                  errno=exc.errno) from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        raise PerfbpError(f"cannot write the recording to {path}: {exc.strerror}; choose "
                          f"a writable path with -o", errno=exc.errno) from None


# --- reading -----------------------------------------------------------------------------


#: bytes of a data section read at a time (:meth:`Recording.chunks`): what
#: reading a recording costs in memory, whatever its length
DATA_WINDOW = 1 << 20


@dataclass
class Recording:
    """A perf.data file: its header read, its data section read on demand.

    Attributes:
        path: where it came from.
        events: the attrs, with ids and names.
        config: how to decode its records (all events share one sample_type).
        data_offset, data_end: where the data section lies in the file (as
            the header says, cut to the file's length).
        truncated: the file ended before the header said (cut short), or the
            data section was cut inside a record (known once
            :meth:`chunks` has reached the end, or :attr:`data` was read).
        pipe: the file is in pipe mode.
        features: raw feature sections by bit.
    """

    path: str
    events: "list[FileEvent]"
    config: ParseConfig
    data_offset: int
    data_end: int
    truncated: bool = False
    pipe: bool = False
    features: "dict[int, bytes]" = field(default_factory=dict)

    def chunks(self, window: "int | None" = None) -> "Iterator[memoryview]":
        """The data section in pieces of whole records, read ``window`` bytes
        (:data:`DATA_WINDOW`) at a time: a piece ends at the last whole
        record of its window, and the next window starts there.  The walk
        stops at a record cut short (at the end of the file) or of an
        impossible size, and then sets :attr:`truncated`.

        Raises:
            PerfbpError: the file can no longer be read.
        """
        from ..kernel.system import open_regular

        window = max(8, window or DATA_WINDOW)
        try:
            f = open_regular(self.path)
        except OSError as exc:
            raise PerfbpError(f"cannot read {self.path}: {exc.strerror}; give the "
                              f"recording with -i FILE", errno=exc.errno) from None
        with f:
            pos, want = self.data_offset, window
            while pos < self.data_end:
                size = min(want, self.data_end - pos)
                buf = _pread(f, pos, size, self.path)
                if len(buf) < size:  # the file shrank since it was opened
                    self.data_end = pos + len(buf)
                cut = whole_records_end(buf, self.config)
                if cut < len(buf):
                    rsize = HEADER.unpack_from(buf, cut)[2] if len(buf) - cut >= 8 else None
                    if pos + len(buf) >= self.data_end or (rsize is not None and rsize < 8):
                        # cut short, or damaged: what comes before is the recording
                        self.data_end = pos + cut
                        self.truncated = True
                    elif not cut:  # a record longer than the window
                        want = max(want, rsize or 8)
                        continue
                if cut:
                    yield memoryview(buf)[:cut]
                pos += cut
                want = window

    @property
    def data(self) -> bytes:
        """The whole data section (whole records), read at once: for small
        recordings; :meth:`chunks` reads any size in bounded memory."""
        return b"".join(self.chunks(max(8, self.data_end - self.data_offset)))

    def id_to_event(self) -> "dict[int, int]":
        return {i: n for n, ev in enumerate(self.events) for i in ev.ids}

    @property
    def meta(self) -> dict:
        """perfbp's own description of the watches (empty for perf's files).

        Raises:
            CorruptRecording: the description is there but damaged (not
                JSON, or a field of the wrong type): the watches it would
                name cannot be trusted.
        """
        raw = self.features.get(HEADER_PERFBP)
        if not raw:
            return {}
        import json
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        problem = _meta_problem(value)
        if problem:
            raise CorruptRecording(f"{self.path}: perfbp's description of its watches (header "
                                   f"feature {HEADER_PERFBP}) is damaged: {problem}; perf "
                                   f"report -i still reads its samples")
        return value

    @property
    def producer(self) -> str:
        """Who wrote the file, ``perfbp`` or ``perf``: from its HEADER_VERSION
        feature when the recording finished, else (a recording cut short has
        no features) from its events: perfbp reads ``PERF_FORMAT_LOST`` alone,
        perf always adds ``PERF_FORMAT_ID``."""
        raw = self.features.get(HEADER_VERSION)
        if raw and len(raw) > 4:
            return "perfbp" if raw[4:].startswith(b"perfbp") else "perf"
        formats = {FileAttr.decode(ev.attr).read_format for ev in self.events}
        return "perfbp" if formats == {PERF_FORMAT_LOST} else "perf"

    @property
    def build_ids(self) -> "list[BuildId]":
        """The build-id table: the HEADER_BUILD_ID feature, or a stream's
        PERF_RECORD_HEADER_BUILD_ID records (read from the stream when no
        report has read them yet)."""
        raw = self.features.get(HEADER_BUILD_ID)
        if raw is None and self.pipe:
            from ..kernel.records import Unknown, decode_bulk

            raw = b"".join(_table_entry(r) for chunk in self.chunks()
                           for r in decode_bulk(chunk, self.config)[1]
                           if isinstance(r, Unknown) and r.type == PERF_RECORD_HEADER_BUILD_ID)
        return parse_build_ids(raw or b"")

    @property
    def cmdline(self) -> "list[str]":
        raw = self.features.get(HEADER_CMDLINE)
        if not raw:
            return []
        try:
            (nr,) = struct.unpack_from("<I", raw, 0)
            off, out = 4, []
            for _ in range(min(nr, 4096)):
                (ln,) = struct.unpack_from("<I", raw, off)
                out.append(raw[off + 4:off + 4 + ln].split(b"\0", 1)[0].decode("utf-8", "replace"))
                off += 4 + ln
            return out
        except struct.error:
            return []


def _meta_problem(meta) -> "str | None":
    """What is wrong with a HEADER_PERFBP description (see recording.py,
    which writes it), or None: each field the readers use has its type."""
    def is_int(x, lo=0, hi=(1 << 64) - 1) -> bool:
        return type(x) is int and lo <= x <= hi

    def dicts(x) -> bool:
        return isinstance(x, list) and all(isinstance(d, dict) for d in x)

    if not isinstance(meta, dict):
        return "not a JSON object"
    if not dicts(meta.get("watches", [])):
        return "watches is not a list of objects"
    for n, w in enumerate(meta.get("watches", [])):
        pieces = w.get("pieces", [])
        if not (isinstance(w.get("label", ""), str) and isinstance(w.get("access", ""), str)
                and isinstance(pieces, list) and pieces
                and all(isinstance(p, list) and len(p) == 2 and is_int(p[0]) and is_int(p[1])
                        for p in pieces)):
            return f"watch {n} has no label, access or pieces [[address, length], ...]"
        if not is_int(w.get("recovered", 0)) or not dicts(w.get("bindings", [])):
            return f"watch {n} has damaged bindings or recovered hits"
        for b in w.get("bindings", []):
            copy = b.get("copy_of", {"object": ""})
            if not (is_int(b.get("pid"), 0, 1 << 32) and is_int(b.get("hits"))
                    and isinstance(b.get("program"), str) and isinstance(b.get("object"), str)
                    and isinstance(copy, dict) and isinstance(copy.get("object"), str)):
                return f"watch {n} has a damaged binding"
    notes = meta.get("notes", [])
    if not (isinstance(notes, list) and all(isinstance(x, str) for x in notes)):
        return "notes is not a list of strings"
    if not is_int(meta.get("sideband_lost", 0)):
        return "sideband_lost is not a count"
    if not dicts(meta.get("multiplexed", [])):
        return "multiplexed is not a list of objects"
    for n, m in enumerate(meta.get("multiplexed", [])):
        coverage = m.get("coverage")
        if not (all(is_int(m.get(k)) for k in ("seen", "estimate", "lost"))
                and type(coverage) in (int, float) and 0 <= coverage <= 1):
            return f"the turns of watch {n} (multiplexed) are damaged"
    return None


#: The first 96 bytes of ``struct perf_event_attr`` (PERF_ATTR_SIZE_VER3),
#: all a reader of a recording needs; the bit fields are in ``flags``.
_ATTR_VER3 = struct.Struct("<IIQQQQQIIQQQQIi")


class FileAttr(NamedTuple):
    """A recorded event's ``perf_event_attr``, decoded by the kernel's field
    names (a shorter attr reads as zeros where it ends)."""

    type: int
    size: int
    config: int
    sample_period: int
    sample_type: int
    read_format: int
    flags: int           # disabled, inherit, ... : the bits below
    wakeup_events: int
    bp_type: int
    bp_addr: int         # config1
    bp_len: int          # config2
    branch_sample_type: int
    sample_regs_user: int
    sample_stack_user: int
    clockid: int

    @classmethod
    def decode(cls, raw: bytes) -> "FileAttr":
        return cls._make(_ATTR_VER3.unpack(bytes(raw[:_ATTR_VER3.size]).ljust(
            _ATTR_VER3.size, b"\0")))

    @property
    def freq(self) -> bool:
        """``attr.freq`` (bit 10): ``sample_period`` is a frequency."""
        return bool(self.flags >> 10 & 1)

    @property
    def sample_id_all(self) -> bool:
        """``attr.sample_id_all`` (bit 18)."""
        return bool(self.flags >> 18 & 1)

    @property
    def period(self) -> int:
        """Hits per sample: ``sample_period``, or 1 when it is a frequency."""
        return 1 if self.freq else max(1, self.sample_period)


def _config_for(events: "list[FileEvent]", path: str) -> ParseConfig:
    if not events:
        raise CorruptRecording(f"{path} has no events (attrs): not a recording perfbp can read")
    confs = {(a.sample_type, a.sample_id_all, a.read_format,
              a.sample_regs_user if a.sample_type & PERF_SAMPLE_REGS_USER else 0)
             for a in (FileAttr.decode(ev.attr) for ev in events)}
    if len(confs) > 1:
        raise CorruptRecording(f"{path} mixes events with different sample formats; "
                               f"perfbp reads recordings whose events share one format")
    conf = confs.pop()
    # raw data on breakpoints: perfbp's values (a watch with a condition);
    # the decoder checks every sample's raw size and kind
    values = conf[0] & PERF_SAMPLE_RAW and any(ev.is_breakpoint for ev in events)
    return ParseConfig(*conf, VALUES_RAW.size if values else 0)


def _pread(f, offset: int, size: int, path: str) -> bytes:
    """``size`` bytes of ``f`` at ``offset`` (fewer at the end of the file)."""
    parts = []
    try:
        while size > 0:
            part = os.pread(f.fileno(), size, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            size -= len(part)
    except OSError as exc:
        raise PerfbpError(f"cannot read {path}: {exc.strerror}; give the recording "
                          f"with -i FILE", errno=exc.errno) from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_recording(path: str) -> Recording:
    """Open a perf.data file (perfbp's or perf's; file or pipe mode): its
    header, attrs and feature sections; the data section stays on disk until
    :meth:`Recording.chunks` (or :attr:`Recording.data`) reads it.

    Raises:
        CorruptRecording: not perf.data, or damaged beyond the header.
        PerfbpError: the file cannot be opened.
    """
    from ..kernel.system import open_regular

    try:
        f = open_regular(path)
    except OSError as exc:
        raise PerfbpError(f"cannot read {path}: {exc.strerror}; give the recording "
                          f"with -i FILE", errno=exc.errno) from None
    with f:
        length = os.fstat(f.fileno()).st_size

        def read(offset: int, size: int) -> bytes:
            return _pread(f, offset, size, path)

        return _read_header(path, read, length)


def _read_header(path: str, read, length: int) -> Recording:
    head = read(0, FILE_HEADER_SIZE)
    if len(head) < PIPE_HEADER.size or head[:8] != MAGIC:
        what = "empty" if not head else "not a perf.data file (no PERFILE2 magic)"
        raise CorruptRecording(f"{path} is {what}: give a recording made by perfbp record "
                               f"or perf record")
    (hsize,) = struct.unpack_from("<Q", head, 8)
    if hsize == PIPE_HEADER.size:
        return _read_pipe(path, read, length)
    if hsize != FILE_HEADER_SIZE or length < FILE_HEADER_SIZE:
        raise CorruptRecording(f"{path} has a perf.data header of {hsize} bytes "
                               f"({length} in the file): the file is damaged")
    (_m, _s, attr_size, a_off, a_size, d_off, d_size, _e1, _e2,
     feat_bits) = FILE_HEADER.unpack_from(head, 0)
    if attr_size < 64 + SECTION.size or a_off + a_size > length or a_size % attr_size:
        raise CorruptRecording(f"{path}: the attr section ({a_size} bytes of "
                               f"{attr_size}-byte entries at {a_off}) does not fit the file")
    table = read(a_off, a_size)
    events = []
    for i in range(a_size // attr_size):
        base = i * attr_size
        raw = table[base:base + attr_size - SECTION.size]
        ids_off, ids_size = SECTION.unpack_from(table, base + attr_size - SECTION.size)
        if ids_off + ids_size > length or ids_size % 8:
            raise CorruptRecording(f"{path}: the ids of event {i} lie outside the file")
        ids = struct.unpack(f"<{ids_size // 8}Q", read(ids_off, ids_size)) if ids_size else ()
        events.append(FileEvent(raw, tuple(ids), ""))
    truncated = False
    end = d_off + d_size
    if d_off > length:
        raise CorruptRecording(f"{path}: the data section starts past the end of the file")
    if not any(feat_bits):
        # the feature sections are written last, by a recording that
        # finished: none means it was cut short, whatever data.size says
        truncated = True
        if d_size == 0 and length > d_off:
            end = length  # a header never updated: take what is there
    if end > length:
        end = length
        truncated = True
    features = _read_features(read, length, d_off + d_size, feat_bits) if not truncated else {}
    names = _event_names(features.get(HEADER_EVENT_DESC, b""))
    events = [FileEvent(ev.attr, ev.ids, names.get(ev.ids[0], "") if ev.ids else
                        (names.get(None, "") if len(events) == 1 else ""))
              for ev in events]
    return Recording(path, events, _config_for(events, path), d_off, end, truncated, False,
                     features)


def _read_features(read, length: int, table_off: int, bits: bytes) -> "dict[int, bytes]":
    out: dict[int, bytes] = {}
    mask = int.from_bytes(bits, "little")
    off = table_off
    for bit in range(256):
        if not mask >> bit & 1:
            continue
        if off + SECTION.size > length:
            break
        s_off, s_size = SECTION.unpack(read(off, SECTION.size))
        off += SECTION.size
        if s_off + s_size <= length:
            out[bit] = read(s_off, s_size)
    return out


def _event_names(raw: bytes) -> "dict":
    """id -> event name, from HEADER_EVENT_DESC."""
    names: dict = {}
    try:
        nr, attr_size = struct.unpack_from("<II", raw, 0)
        off = 8
        for _ in range(min(nr, 4096)):
            off += attr_size
            (nr_ids,) = struct.unpack_from("<I", raw, off)
            off += 4
            (ln,) = struct.unpack_from("<I", raw, off)
            name = raw[off + 4:off + 4 + ln].split(b"\0", 1)[0].decode("utf-8", "replace")
            off += 4 + ln
            ids = struct.unpack_from(f"<{nr_ids}Q", raw, off)
            off += 8 * nr_ids
            for i in ids:
                names[i] = name
            if not ids:
                names[None] = name
    except struct.error:
        pass
    return names


def _read_pipe(path: str, read, length: int) -> Recording:
    """Pipe mode: attrs come as PERF_RECORD_HEADER_ATTR records in the stream,
    before the kernel's records; the data section is the whole stream."""
    pos = PIPE_HEADER.size
    events: list[FileEvent] = []
    while pos + 8 <= length:
        rtype, _misc, size = HEADER.unpack(read(pos, 8))
        if size < 8 or pos + size > length:
            break
        if rtype == PERF_RECORD_HEADER_ATTR:
            body = read(pos + 8, size - 8)
            (asize,) = struct.unpack_from("<I", body, 4) if len(body) >= 8 else (0,)
            asize = asize or 64
            if asize > len(body):
                raise CorruptRecording(f"{path}: a HEADER_ATTR record is cut short")
            if asize < 64:  # PERF_ATTR_SIZE_VER0: no attr is smaller
                raise CorruptRecording(f"{path}: a HEADER_ATTR record holds an attr of "
                                       f"{asize} bytes (the smallest is 64): the file is "
                                       f"damaged")
            ids_raw = body[asize:]
            ids = struct.unpack_from(f"<{len(ids_raw) // 8}Q", ids_raw, 0)
            events.append(FileEvent(body[:asize], tuple(ids), ""))
        elif rtype == PERF_RECORD_EVENT_UPDATE and size >= 24:
            body = read(pos + 8, size - 8)
            kind, eid = struct.unpack_from("<QQ", body, 0)
            if kind == PERF_EVENT_UPDATE__NAME:
                name = body[16:].split(b"\0", 1)[0].decode("utf-8", "replace")
                events = [FileEvent(ev.attr, ev.ids, name) if eid in ev.ids else ev
                          for ev in events]
        elif rtype < 64:
            break  # the kernel's records start: all attrs are known
        pos += size
    return Recording(path, events, _config_for(events, path), PIPE_HEADER.size, length,
                     False, True, {})
