"""``perfbp report`` on a corpus of mutated recordings (issue 11: nothing
lost, nothing hangs): every mutant ends in under 10 s with exit 0 or 2 and
no traceback.

The seeds are made at test time on a small C workload (rec_writers): by
``perfbp record`` (with and without -g, with ``--call-graph dwarf``, one
multiplexed, one in pipe mode), and by ``perf record -e mem:ADDR/8:w``
(file and pipe mode, with and without -g, with ``--call-graph dwarf``).  From them :func:`mutants` makes :data:`COUNT` mutants with ``random.Random(SEED)``:
bit flips, truncations at every boundary the format has (header, attrs,
ids, records, feature sections), header and attr fields set to 0, huge or
negative, record sizes and types corrupted, feature sections garbled,
perfbp's JSON feature given wrong types, records dropped, duplicated and
spliced in from another seed, and mapping records whose file names point at
what a report must never open or wait on (/dev/zero, a FIFO, a directory,
/proc/self/mem, a missing path, a sparse 8 GiB file, a damaged ELF).

Each mutant is reported in-process through the CLI's ``main`` (a SIGALRM
names one that takes too long), and a sample of them through a real
``perfbp report`` subprocess.  A failure names the seed, the mutant's index
and kind, and the file kept under pytest's tmp directory, with the command
that reproduces it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import cli_in_process, cli_problem
from perfbp.data.perfdata import FILE_HEADER, SECTION, feature_sections, read_recording

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

REPO = Path(__file__).resolve().parent.parent
SEED = 11  # issue 11
COUNT = 540
LIMIT = 10  # seconds a report may take, whatever it is given
SUBPROCESS_SAMPLE = 16
RECORD_ATTEMPTS = 5  # perf's workload may die of the machine's SIGTRAP (conftest)

PERF_RECORD_MMAP = 1
PERF_RECORD_MMAP2 = 10
PERF_RECORD_HEADER_ATTR = 64
HUGE = (0, 1, 7, 8, 104, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
        (1 << 64) - 8)


# --- the seeds -----------------------------------------------------------------------


def _run(args: "list[str]", **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, timeout=120, cwd=REPO, **kw)


def _killed_by_the_machine(r: subprocess.CompletedProcess) -> bool:
    err = r.stderr.decode(errors="replace") if isinstance(r.stderr, bytes) else r.stderr
    return r.returncode in (-signal.SIGTRAP, 128 + signal.SIGTRAP) or \
        "Trace/breakpoint trap" in err


def _record(args: "list[str]", out: Path, *, stdout_is_data: bool = False) -> Path:
    """Run a recording command until the machine lets the workload live."""
    for _attempt in range(RECORD_ATTEMPTS):
        if stdout_is_data:
            with open(out, "wb") as f:
                r = subprocess.run(args, stdout=f, stderr=subprocess.PIPE, timeout=120,
                                   cwd=REPO)
        else:
            r = _run(args)
        if r.returncode == 0 and not _killed_by_the_machine(r):
            return out
        busy = b"ENOSPC" in r.stderr or b"No space left" in r.stderr  # slots taken
        if not _killed_by_the_machine(r) and not busy:
            raise AssertionError(f"{' '.join(args)} failed ({r.returncode}): "
                                 f"{r.stderr.decode(errors='replace')[-800:]}")
        time.sleep(1)  # the machine's SIGTRAP, or another user's watches: again
    raise AssertionError(f"{' '.join(args)}: the workload died of SIGTRAP, or the slots "
                         f"were taken, {RECORD_ATTEMPTS} times (see conftest: a machine that "
                         f"loses debug exceptions)")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def seeds(workdir, build) -> "dict[str, bytes]":
    """name -> bytes of each seed recording (about 1,000 samples each)."""
    exe = build("rec_writers.c", "-O1", "-g", "-no-pie", "-pthread")  # nm: the run-time address
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    counter = int(next(ln.split()[0] for ln in nm.splitlines()
                       if ln.split()[-1] == "counter"), 16)
    work = [str(exe), "500"]
    perfbp = [sys.executable, "-m", "perfbp", "record"]
    perf = ["perf", "record", "-q", "-e", f"mem:{counter:#x}/8:w"]
    d = workdir
    made = {
        "perfbp": _record([*perfbp, "-o", str(d / "perfbp.data"), "-w", "counter", "--",
                           *work], d / "perfbp.data"),
        "perfbp-g": _record([*perfbp, "-g", "-o", str(d / "perfbp-g.data"), "-w", "counter",
                             "--", *work], d / "perfbp-g.data"),
        # five watches on four slots: they take turns (perfbp's JSON feature
        # then decides which sample belongs to which watch)
        "perfbp-mux": _record([*perfbp, "--multiplex", "-o", str(d / "perfbp-mux.data"),
                               *[a for off in range(0, 40, 8)
                                 for a in ("-w", f"{counter + off:#x}")],
                               "--", *work], d / "perfbp-mux.data"),
        # perfbp's pipe mode: names, features and its JSON as records in the stream
        "perfbp-pipe": _record([*perfbp, "-o", "-", "-w", "counter", "--", *work],
                               d / "perfbp-pipe.data", stdout_is_data=True),
        "perf": _record([*perf, "-o", str(d / "perf.data"), "--", *work], d / "perf.data"),
        "perf-g": _record([*perf, "-g", "-o", str(d / "perf-g.data"), "--", *work],
                          d / "perf-g.data"),
        "perf-pipe": _record([*perf, "-g", "-o", "-", "--", *work], d / "perf-pipe.data",
                             stdout_is_data=True),
        # user stacks, unwound by the report (a damaged one must end it,
        # never hang it): perfbp's and perf's
        "perfbp-dwarf": _record([*perfbp, "--call-graph", "dwarf,1024", "-o",
                                 str(d / "perfbp-dwarf.data"), "-w", "counter", "--", *work],
                                d / "perfbp-dwarf.data"),
        "perf-dwarf": _record([*perf, "--call-graph", "dwarf,1024", "-o",
                               str(d / "perf-dwarf.data"), "--", *work], d / "perf-dwarf.data"),
    }
    return {name: path.read_bytes() for name, path in made.items()}


@pytest.fixture(scope="module")
def targets(workdir, seeds, build) -> "list[str]":
    """File names a mutated mapping record may name (see the module doc)."""
    fifo = workdir / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    sparse = workdir / "sparse-8g"
    with open(sparse, "wb") as f:
        f.truncate(8 << 30)
    elf = build("rec_writers.c", "-O1", "-g", "-no-pie", "-pthread").read_bytes()
    damaged = []
    for percent in (10, 50, 90, 99):  # cut short: headers, sections, DWARF, the table
        damaged.append(workdir / f"elf-cut-{percent}")
        damaged[-1].write_bytes(elf[:len(elf) * percent // 100])
    rng = random.Random(SEED)
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    for name, lo, hi, n in (("elf-garbled", 64, len(elf), 400),  # anywhere
                            ("elf-garbled-dwarf", len(elf) // 2, shoff, 200),  # .debug_*
                            ("elf-garbled-sections", shoff, len(elf), 40)):  # the table
        garbled = bytearray(elf)
        for _ in range(n):
            garbled[rng.randrange(lo, hi)] = rng.randrange(256)
        damaged.append(workdir / name)
        damaged[-1].write_bytes(bytes(garbled))
    (workdir / "empty").write_bytes(b"")
    link = workdir / "link-to-zero"
    if not link.exists():
        link.symlink_to("/dev/zero")
    return ["/dev/zero", str(fifo), str(workdir), "/proc/self/mem", "/no/such/file",
            str(sparse), *map(str, damaged), str(workdir / "empty"), str(link), "/dev/stdin", "/proc/self/fd/0",
            "/" + "x" * 5000, "relative/path", "/tmp/new\nline\x1b[31m", "/dev/tty"]


# --- the recordings' layout, and rebuilding one ------------------------------------------


class Layout:
    """A seed taken apart: everything before the data section (the header,
    attrs and ids, kept as bytes), the records, and the feature sections;
    :meth:`build` puts it back together around changed parts."""

    def __init__(self, blob: bytes, path: str) -> None:
        rec = read_recording(path)
        self.pipe = rec.pipe
        self.trailer = rec.config.sample_id_size
        if self.pipe:
            self.prefix = blob[:16]
            self.data = blob[16:]
            self.features: "list[tuple[int, bytes]]" = []
        else:
            fields = FILE_HEADER.unpack_from(blob, 0)
            d_off, d_size, bits = fields[5], fields[6], fields[9]
            self.prefix = blob[:d_off]
            self.data = blob[d_off:d_off + d_size]
            mask = int.from_bytes(bits, "little")
            present = [b for b in range(256) if mask >> b & 1]
            self.features = []
            for i, bit in enumerate(present):
                off, size = SECTION.unpack_from(blob, d_off + d_size + SECTION.size * i)
                self.features.append((bit, blob[off:off + size]))
        self.records = split_records(self.data)

    def build(self, records: "list[bytes] | None" = None,
              features: "list[tuple[int, bytes]] | None" = None) -> bytes:
        data = b"".join(self.records if records is None else records)
        if self.pipe:
            return self.prefix + data
        features = self.features if features is None else features
        head = bytearray(self.prefix)
        d_off = len(head)
        struct.pack_into("<Q", head, 48, len(data))
        sections, bits = feature_sections(features, d_off + len(data))
        head[72:104] = bits
        return bytes(head) + data + sections

    def boundaries(self) -> "list[int]":
        """Offsets where one part of the file ends and the next begins."""
        out = [8, 16, 104]
        if not self.pipe:
            fields = FILE_HEADER.unpack_from(self.prefix, 0)
            a_off, a_size, attr_size = fields[3], fields[4], fields[2]
            out += [a_off + k * attr_size for k in range(a_size // attr_size + 1)]
            out += [a_off + k * attr_size + 4 for k in range(a_size // attr_size)]
        pos = len(self.prefix)
        for r in self.records:
            out.append(pos)
            pos += len(r)
        out.append(pos)
        for _bit, raw in self.features:
            out.append(pos)
            pos += SECTION.size
        return sorted(set(out))


def split_records(data: bytes) -> "list[bytes]":
    out, pos = [], 0
    while pos + 8 <= len(data):
        (size,) = struct.unpack_from("<H", data, pos + 6)
        if size < 8 or pos + size > len(data):
            break
        out.append(data[pos:pos + size])
        pos += size
    return out


def _pad_name(name: bytes) -> bytes:
    return (name + b"\0").ljust((len(name) + 1 + 7) // 8 * 8, b"\0")


def renamed(record: bytes, name: bytes, trailer: int) -> bytes:
    """A MMAP or MMAP2 record naming another file (sizes kept right)."""
    rtype, misc, _size = struct.unpack_from("<IHH", record, 0)
    start = 8 + (32 if rtype == PERF_RECORD_MMAP else 64)
    tail = record[len(record) - trailer:] if trailer else b""
    body = record[8:start] + _pad_name(name) + tail
    size = min(8 + len(body), 0xFFF8)
    return struct.pack("<IHH", rtype, misc, size) + body[:size - 8]


# --- the mutations -----------------------------------------------------------------------


def m_flip(rng, lay, blob, seeds, targets):
    out = bytearray(blob)
    for _ in range(rng.choice((1, 2, 8, 64))):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def m_bytes(rng, lay, blob, seeds, targets):
    """A run of random or 0xff bytes somewhere near a boundary."""
    out = bytearray(blob)
    at = min(rng.choice(lay.boundaries()) + rng.randrange(-4, 12), len(out) - 1)
    n = rng.choice((1, 4, 8, 16))
    fill = rng.choice((b"\xff", b"\0", None))
    for i in range(at, min(at + n, len(out))):
        out[i] = rng.randrange(256) if fill is None else fill[0]
    return bytes(out)


def m_truncate(rng, lay, blob, seeds, targets):
    at = rng.choice(lay.boundaries()) + rng.choice((-8, -1, 0, 0, 1, 7))
    return blob[:max(0, min(at, len(blob)))]


def m_header(rng, lay, blob, seeds, targets):
    out = bytearray(blob.ljust(104, b"\0"))
    if lay.pipe:
        struct.pack_into("<Q", out, 8, rng.choice(HUGE))
        return bytes(out)
    for _ in range(rng.choice((1, 1, 2))):
        off = rng.choice((8, 16, 24, 32, 40, 48, 56, 64))
        value = rng.choice(HUGE + (len(blob), len(blob) + 1, len(blob) - 8))
        struct.pack_into("<Q", out, off, value % (1 << 64))
    if rng.random() < 0.2:
        out[72:104] = rng.choice((b"\xff" * 32, bytes(rng.randrange(256) for _ in range(32))))
    return bytes(out)


def m_attr(rng, lay, blob, seeds, targets):
    """An attr's size, type, sample_type, read_format, flags or bp fields,
    or its ids section, set to something odd."""
    if lay.pipe:
        recs = list(lay.records)
        idx = [i for i, r in enumerate(recs) if struct.unpack_from("<I", r)[0]
               == PERF_RECORD_HEADER_ATTR]
        if not idx:
            return m_flip(rng, lay, blob, seeds, targets)
        i = rng.choice(idx)
        r = bytearray(recs[i])
        field = rng.choice((12, 8, 40, 48, 56, 76, 80, "ids"))
        if field == "ids":  # ids appended: many, or a ragged tail
            r += rng.choice((b"\1" * 3, struct.pack("<Q", 7) * rng.choice((1, 1000))))
            r = r[:0xFFF8]
            struct.pack_into("<H", r, 6, len(r))
        elif field in (8, 12):
            struct.pack_into("<I", r, field, rng.choice((0, 1, 63, 64, 200, 0xFFFFFFFF)))
        else:
            struct.pack_into("<Q", r, field, rng.choice(HUGE) % (1 << 64))
        recs[i] = bytes(r)
        return lay.build(recs)
    out = bytearray(blob)
    fields = FILE_HEADER.unpack_from(blob, 0)
    attr_size, a_off, a_size = fields[2], fields[3], fields[4]
    base = a_off + attr_size * rng.randrange(max(1, a_size // attr_size))
    field = rng.choice(("size", "type", "sample_type", "read_format", "flags", "bp",
                        "ids_off", "ids_size", "ids_both"))
    if field == "size":
        struct.pack_into("<I", out, base + 4, rng.choice((0, 1, 63, 64, 65, 0xFFFFFFFF)))
    elif field == "type":
        struct.pack_into("<I", out, base, rng.choice((0, 1, 2, 5, 6, 0xFFFFFFFF)))
    elif field in ("sample_type", "read_format", "flags"):
        at = {"sample_type": 24, "read_format": 32, "flags": 40}[field]
        struct.pack_into("<Q", out, base + at, rng.choice((0, (1 << 64) - 1,
                                                            rng.getrandbits(64),
                                                            1 << rng.randrange(64))))
    elif field == "bp":
        struct.pack_into("<IQQ", out, base + 52, rng.choice((0, 3, 0xFFFFFFFF)),
                         rng.choice(HUGE) % (1 << 64), rng.choice(HUGE) % (1 << 64))
    else:
        sec = base + attr_size - SECTION.size
        ids_off, ids_size = SECTION.unpack_from(blob, sec)
        if field in ("ids_off", "ids_both"):
            ids_off = rng.choice(HUGE + (len(blob) - 4,)) % (1 << 64)
        if field in ("ids_size", "ids_both"):
            ids_size = rng.choice(HUGE + (len(blob) // 8 * 8, 12)) % (1 << 64)
        SECTION.pack_into(out, sec, ids_off, ids_size)
    return bytes(out)


def m_record(rng, lay, blob, seeds, targets):
    """One record's size or type changed, the data section's length kept."""
    recs = list(lay.records)
    if not recs:
        return m_flip(rng, lay, blob, seeds, targets)
    i = rng.randrange(len(recs))
    r = bytearray(recs[i])
    if rng.random() < 0.6:
        size = struct.unpack_from("<H", r, 6)[0]
        struct.pack_into("<H", r, 6, rng.choice((0, 1, 7, 8, 9, max(0, size - 8), size + 8,
                                                 size + 1, 0xFFFF)) & 0xFFFF)
    else:
        struct.pack_into("<I", r, 0, rng.choice((0, 2, 3, 9, 10, 11, 12, 14, 63, 64, 66, 67,
                                                 68, 69, 73, 74, 79, 80, 81, 82, 0xFFFF,
                                                 0xFFFFFFFF)))
    recs[i] = bytes(r)
    return lay.build(recs)


def m_body(rng, lay, blob, seeds, targets):
    """Random bytes inside one record's body (its header kept)."""
    recs = list(lay.records)
    if not recs:
        return m_flip(rng, lay, blob, seeds, targets)
    kinds = sorted({struct.unpack_from("<I", r)[0] for r in recs})
    kind = rng.choice(kinds)
    i = rng.choice([k for k, r in enumerate(recs) if struct.unpack_from("<I", r)[0] == kind])
    r = bytearray(recs[i])
    for _ in range(rng.choice((1, 4, 16))):
        if len(r) > 8:
            at = rng.randrange(8, len(r))
            r[at] = rng.choice((0, 0xFF, rng.randrange(256)))
    recs[i] = bytes(r)
    return lay.build(recs)


def m_records(rng, lay, blob, seeds, targets):
    """Records dropped, duplicated, reordered, or spliced in from another seed."""
    recs = list(lay.records)
    how = rng.choice(("drop", "dup", "shuffle", "splice", "splice", "repeat"))
    if how == "drop" and recs:
        kinds = sorted({struct.unpack_from("<I", r)[0] for r in recs})
        gone = rng.choice(kinds)
        recs = [r for r in recs if struct.unpack_from("<I", r)[0] != gone]
    elif how == "dup" and recs:
        i = rng.randrange(len(recs))
        recs[i:i] = [recs[i]] * rng.choice((1, 2, 50))
    elif how == "shuffle":
        rng.shuffle(recs)
    elif how == "repeat":
        recs = recs * 3
    else:
        donor = rng.choice(list(seeds.values())).records
        if donor:
            a = rng.randrange(len(donor))
            piece = donor[a:a + rng.choice((1, 5, 200))]
            at = rng.randrange(len(recs) + 1)
            recs[at:at] = piece
    return lay.build(recs)


def m_feature(rng, lay, blob, seeds, targets):
    """A feature section garbled, cut, emptied, or its table pointing away."""
    if lay.pipe or not lay.features:
        return m_records(rng, lay, blob, seeds, targets)
    feats = list(lay.features)
    i = rng.randrange(len(feats))
    bit, raw = feats[i]
    how = rng.choice(("random", "cut", "empty", "huge_counts", "flip", "table"))
    if how == "random":
        raw = bytes(rng.randrange(256) for _ in range(rng.choice((1, 8, len(raw)))))
    elif how == "cut":
        raw = raw[:rng.randrange(len(raw) + 1)]
    elif how == "empty":
        raw = b""
    elif how == "huge_counts":  # the u32 counts and lengths these sections start with
        raw = bytearray(raw.ljust(16, b"\0"))
        for at in range(0, min(len(raw) - 3, 16), 4):
            if rng.random() < 0.5:
                struct.pack_into("<I", raw, at, rng.choice((0, 0x7FFFFFFF, 0xFFFFFFFF, 4096)))
        raw = bytes(raw)
    elif how == "flip":
        raw = bytearray(raw)
        for _ in range(8):
            if raw:
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        raw = bytes(raw)
    else:
        out = bytearray(lay.build())
        fields = FILE_HEADER.unpack_from(out, 0)
        table = fields[5] + fields[6] + SECTION.size * i
        SECTION.pack_into(out, table, rng.choice(HUGE) % (1 << 64),
                          rng.choice(HUGE) % (1 << 64))
        return bytes(out)
    feats[i] = (bit, raw)
    return lay.build(features=feats)


JUNK = (None, True, -1, 0, 1 << 70, -(1 << 70), 1.5, float("nan"), "x", "", "0x10",
        [], {}, [[]], [[1]], [["a", "b"]], [[1, 2, 3]], [None], {"a": 1})


def _jumble(rng, value, depth=0):
    """``value`` with one node somewhere replaced by junk of another type."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        return {**value, key: _jumble(rng, value[key], depth + 1)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return value[:i] + [_jumble(rng, value[i], depth + 1)] + value[i + 1:]
    return rng.choice(JUNK)


def m_meta(rng, lay, blob, seeds, targets):
    """perfbp's own JSON feature with a node of the wrong type, or not JSON."""
    feats = list(lay.features)
    idx = [i for i, (bit, _r) in enumerate(feats) if bit == 255]
    if not idx:
        return m_feature(rng, lay, blob, seeds, targets)
    i = idx[0]
    meta = json.loads(feats[i][1])
    if rng.random() < 0.1:
        raw = rng.choice((b"[1, 2]", b"null", b"{", b"\xff\xfe", b'"text"'))
    else:
        for _ in range(rng.choice((1, 1, 2, 3))):
            meta = _jumble(rng, meta)
        raw = json.dumps(meta).encode()
    feats[i] = (255, raw)
    return lay.build(features=feats)


def m_mmap(rng, lay, blob, seeds, targets):
    """The mapping records name a file a report must not open or wait on."""
    name = rng.choice(targets).encode()
    if rng.random() < 0.1:
        name = rng.choice((b"/tmp/\xff\xfe", b"", b"/"))
    recs = [renamed(r, name, lay.trailer)
            if struct.unpack_from("<I", r)[0] in (PERF_RECORD_MMAP, PERF_RECORD_MMAP2)
            and (rng.random() < 0.7) else r for r in lay.records]
    return lay.build(recs)


MUTATIONS = {
    "flip": m_flip, "bytes": m_bytes, "truncate": m_truncate, "header": m_header,
    "attr": m_attr, "record": m_record, "body": m_body, "records": m_records,
    "feature": m_feature, "meta": m_meta, "mmap": m_mmap,
}
WEIGHTS = {"flip": 2, "bytes": 2, "truncate": 2, "header": 2, "attr": 2, "record": 2,
           "body": 2, "records": 2, "feature": 2, "meta": 1, "mmap": 3}


def mutants(seeds: "dict[str, tuple[bytes, str]]", targets: "list[str]", count: int,
            seed: int = SEED):
    """``(index, seed name, kind, bytes)`` for ``count`` mutants, the same
    ones for the same seeds and ``seed``."""
    rng = random.Random(seed)
    names = sorted(seeds)
    layouts = {n: Layout(*seeds[n]) for n in names}  # what splices take records from
    kinds = [k for k, w in WEIGHTS.items() for _ in range(w)]
    for index in range(count):
        name = names[index % len(names)]
        kind = rng.choice(kinds)
        if kind == "meta" and not name.startswith("perfbp"):
            kind = "mmap"
        blob = MUTATIONS[kind](rng, layouts[name], seeds[name][0], layouts, targets)
        if rng.random() < 0.3:  # and a second, blind to the first
            then = rng.choice(("flip", "bytes", "truncate", "header"))
            blob = MUTATIONS[then](rng, layouts[name], blob, layouts, targets)
            kind += "+" + then
        yield index, name, kind, blob


# --- running report ------------------------------------------------------------------------


OPTIONS = (["--format", "table"], ["--format", "json"], ["--format", "csv"],
           ["--sort", "symbol"], ["--sort", "thread"], ["--sort", "cpu"],
           ["--format", "json", "--sort", "symbol", "--top", "1"])


def report_in_process(args: "list[str]") -> "tuple[int | str, str, str, float]":
    return cli_in_process(["report", *args], LIMIT)


def _problem(code, stderr: str, seconds: float) -> "str | None":
    return cli_problem(code, stderr, seconds, LIMIT)


@pytest.fixture(scope="module")
def corpus(workdir, seeds, targets) -> "list[tuple[int, str, str, Path, list[str]]]":
    """The mutants, written out: (index, seed, kind, path, report options)."""
    kept = {}
    for name, blob in seeds.items():
        path = workdir / f"{name}.data"
        kept[name] = (blob, str(path))
    out = []
    mdir = workdir / "mutants"
    mdir.mkdir(exist_ok=True)
    rng = random.Random(SEED + 1)
    for index, name, kind, blob in mutants(kept, targets, COUNT):
        path = mdir / f"{index:04d}-{name}-{kind}.data"
        path.write_bytes(blob)
        out.append((index, name, kind, path, rng.choice(OPTIONS)))
    return out


def _describe(index, name, kind, path, opts, problem) -> str:
    return (f"mutant {index} (SEED={SEED}, seed recording {name}, mutation {kind}): "
            f"{problem}\n  reproduce: perfbp report -i {path} {' '.join(opts)}")


def test_corpus_is_large_and_varied(corpus):
    assert len(corpus) >= 500
    kinds = {kind.split("+")[0] for _i, _n, kind, _p, _o in corpus}
    assert kinds == set(MUTATIONS)
    assert len({n for _i, n, _k, _p, _o in corpus}) == 9


def test_report_survives_every_mutant_in_process(corpus, capsys):
    import faulthandler

    # a hang outside Python (in C) ends the run with every thread's stack
    faulthandler.dump_traceback_later(LIMIT * 3, exit=True, file=sys.__stderr__)
    failures, times, codes = [], [], {}
    try:
        for index, name, kind, path, opts in corpus:
            code, _out, err, seconds = report_in_process(["-i", str(path), *opts])
            times.append(seconds)
            codes[code] = codes.get(code, 0) + 1
            problem = _problem(code, err, seconds)
            if problem:
                failures.append(_describe(index, name, kind, path, opts, problem))
    finally:
        faulthandler.cancel_dump_traceback_later()
    with capsys.disabled():
        print(f"\ncorpus: {len(times)} mutants, exit codes {codes}, "
              f"{sum(times):.1f} s in all, slowest {max(times):.2f} s")
    assert not failures, f"{len(failures)} mutants failed:\n" + "\n".join(failures[:20])


def test_report_survives_a_sample_in_subprocesses(corpus):
    """The real command, on a sample: what a user runs, with a hard timeout."""
    sample = random.Random(SEED).sample(corpus, SUBPROCESS_SAMPLE)

    def one(case):
        index, name, kind, path, opts = case
        start = time.monotonic()
        try:
            r = subprocess.run([sys.executable, "-m", "perfbp", "report", "-i", str(path),
                                *opts], capture_output=True, text=True, timeout=LIMIT,
                               stdin=subprocess.DEVNULL, cwd=REPO)
        except subprocess.TimeoutExpired:
            return _describe(index, name, kind, path, opts, f"no end in {LIMIT} s")
        problem = _problem(r.returncode, r.stderr, time.monotonic() - start)
        return problem and _describe(index, name, kind, path, opts, problem)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        failures = [f for f in pool.map(one, sample) if f]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("meta", [b"{", b"[]", b'{"watches": [{"label": "w", "pieces": []}]}',
                                  b'{"multiplexed": [{"coverage": 0.5, "seen": null}]}',
                                  b'{"watches": [{"label": "w", "pieces": [[1, 8]], '
                                  b'"bindings": [{"pid": "x"}]}]}'])
def test_a_damaged_description_of_the_watches_is_one_line(seeds, workdir, meta):
    lay = Layout(seeds["perfbp"], str(workdir / "perfbp.data"))
    path = workdir / "damaged-meta.data"
    path.write_bytes(lay.build(features=[(b, meta if b == 255 else raw)
                                         for b, raw in lay.features]))
    code, _out, err, _s = report_in_process(["-i", str(path)])
    assert code == 2 and _problem(code, err, 0) is None, err
    assert "description of its watches (header feature 255) is damaged" in err


@pytest.mark.parametrize("size", [1, 8, 63])
def test_a_piped_attr_smaller_than_any_is_one_line(seeds, workdir, size):
    lay = Layout(seeds["perf-pipe"], str(workdir / "perf-pipe.data"))
    recs = [r[:12] + struct.pack("<I", size) + r[16:]
            if struct.unpack_from("<I", r)[0] == PERF_RECORD_HEADER_ATTR else r
            for r in lay.records]
    path = workdir / "small-attr.data"
    path.write_bytes(lay.build(recs))
    code, _out, err, _s = report_in_process(["-i", str(path)])
    assert code == 2 and _problem(code, err, 0) is None, err
    assert f"holds an attr of {size} bytes" in err
