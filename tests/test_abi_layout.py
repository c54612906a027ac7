"""The binary layouts of perfbp.kernel._uapi, checked against the kernel headers.

Declared once and checked: ``struct perf_event_attr``, ``struct perf_event_mmap_page``
and ``struct perf_event_header`` are declared once, in :mod:`perfbp.kernel._uapi`, and
handed to cffi by :mod:`perfbp.kernel.abi`.  This test compiles a C probe against the
system's ``<linux/perf_event.h>`` and ``<linux/hw_breakpoint.h>`` and compares,
with what cffi computed from perfbp's declaration:

* the offset and size of every field both sides know, and the exact bits of
  every bitfield (set to all ones in a zeroed struct, then see which bits of
  the struct changed: ``offsetof`` cannot be taken of a bitfield);
* every ``PERF_*`` / ``HW_BREAKPOINT_*`` constant perfbp defines that the header
  also defines, every ``PERF_EVENT_IOC_*`` ioctl number and
  ``__NR_perf_event_open``.

The field list of the header side is not typed in here: it is read from the
preprocessed header itself (with pycparser, which cffi depends on), so a field
the header has and perfbp lacks cannot be missed.

perfbp may declare a newer UAPI than the system header (perfbp: 6.13's
``aux_action`` bits and ``config3``; linux-libc-dev may be 6.1).  A field only
perfbp declares is accepted when it is appended (at or beyond the header's
``sizeof``) or lies inside a field the header calls ``__reserved*``; the
header's ``sizeof`` must not exceed perfbp's.

The BPF declarations (the members of ``union bpf_attr`` perfbp declares as
structs of their own, every ``BPF_*`` constant, ``offsetof(struct
bpf_perf_event_data, addr)`` and ``__NR_bpf``) are checked the same way
against ``<linux/bpf.h>``, at the end.

The second half checks :func:`perfbp.kernel.abi._check`, the one place that turns a
failed call into OSError, against real errno values from the running kernel.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

from perfbp.kernel import _uapi, abi

ffi = abi.ffi

#: The structs compared, and whether their size is fixed by the ABI (the mmap
#: page and the record header never grow; the attr grows at its end, with
#: ``attr.size`` telling the kernel which version user space speaks).
STRUCTS = {
    "perf_event_attr": False,
    "perf_event_mmap_page": True,
    "perf_event_header": True,
}

CONST_PREFIXES = ("PERF_", "HW_BREAKPOINT_")
U64 = (1 << 64) - 1

#: The PERF_EVENT_IOC_* ioctls of the UAPI (ENABLE .. MODIFY_ATTRIBUTES).
EXPECTED_IOCTLS = 12

HEADER_INCLUDES = "#include <linux/perf_event.h>\n#include <linux/hw_breakpoint.h>\n"

#: Typedefs for parsing the struct bodies cut out of the preprocessed header.
PARSE_PRELUDE = """
typedef unsigned long long __u64; typedef long long __s64;
typedef unsigned int __u32; typedef int __s32;
typedef unsigned short __u16; typedef short __s16;
typedef unsigned char __u8; typedef signed char __s8;
"""


# --------------------------------------------------------------------------
# Layout model shared by both sides
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One member of a struct, anonymous unions and structs flattened.

    ``bits`` are absolute bit numbers in the struct (byte * 8 + bit in byte):
    for a plain field, all the bits of its bytes; for a bitfield, the bits that
    changed when it was set to all ones in a zeroed struct.
    """

    name: str
    offset: int        # bytes; for a bitfield, its first changed byte
    size: int          # bytes; for a bitfield, the size of its declared type
    bitfield: bool
    bits: frozenset

    def describe(self) -> str:
        if not self.bitfield:
            return f"offset {self.offset} size {self.size}"
        return describe_bits(self.bits)


def plain_field(name: str, offset: int, size: int) -> Field:
    return Field(name, offset, size, False, frozenset(range(offset * 8, (offset + size) * 8)))


def bitfield_from_bytes(name: str, data: bytes, type_size: int) -> Field:
    bits = frozenset(i * 8 + b for i, byte in enumerate(data) for b in range(8) if byte >> b & 1)
    offset = min(bits) // 8 if bits else -1
    return Field(name, offset, type_size, True, bits)


def describe_bits(bits) -> str:
    """``u64 word at offset 40, mask 0x3`` (the mask in native byte order)."""
    if not bits:
        return "no bits (setting it changed nothing)"
    words: dict[int, int] = {}
    for bit in bits:
        byte, b = divmod(bit, 8)
        word = byte // 8 * 8
        shift = (byte - word) * 8 if sys.byteorder == "little" else (7 - (byte - word)) * 8
        words[word] = words.get(word, 0) | (1 << (shift + b))
    return ", ".join(f"u64 word at offset {w}, mask {m:#x}" for w, m in sorted(words.items()))


def is_reserved(name: str) -> bool:
    return name.startswith("__reserved") or name.startswith("cap_____res")


@dataclass
class Layout:
    name: str
    size: int
    fields: dict  # name -> Field


# --------------------------------------------------------------------------
# perfbp's side: what cffi made of perfbp.kernel._uapi.CDEF
# --------------------------------------------------------------------------

def cffi_layout(struct: str, ffi=ffi) -> Layout:
    """The layout cffi computed; ``typeof().fields`` flattens anonymous members."""
    ctype = f"struct {struct}"
    fields = {}
    for name, f in ffi.typeof(ctype).fields:
        type_size = ffi.sizeof(f.type)
        if f.bitsize >= 0:  # a bitfield: measure it the way the C probe does
            p = ffi.new(f"{ctype} *")
            setattr(p, name, (1 << f.bitsize) - 1)
            fields[name] = bitfield_from_bytes(name, bytes(ffi.buffer(p)), type_size)
        else:
            assert ffi.offsetof(ctype, name) == f.offset
            fields[name] = plain_field(name, f.offset, type_size)
    return Layout(struct, ffi.sizeof(ctype), fields)


# --------------------------------------------------------------------------
# The header's side: a C probe generated from the header and from _uapi
# --------------------------------------------------------------------------

def run_gcc(args, cwd, what):
    proc = subprocess.run(["gcc", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"gcc failed to {what}:\n$ gcc {' '.join(args)}\n{proc.stderr}")
    return proc.stdout


def cut_struct(text: str, struct: str) -> str:
    """The text of ``struct NAME { ... };`` in preprocessed C."""
    m = re.search(r"\bstruct\s+%s\s*\{" % re.escape(struct), text)
    if not m:
        pytest.fail(f"struct {struct} not found in the preprocessed <linux/perf_event.h>")
    depth, i = 0, m.end() - 1
    while True:
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[m.start():i + 1] + ";"
        i += 1


def header_members(struct_text: str):
    """``[(name, is_bitfield)]`` of a struct, anonymous members flattened."""
    from pycparser import c_ast, c_parser

    ast = c_parser.CParser().parse(PARSE_PRELUDE + struct_text)
    decl = ast.ext[-1]
    out = []

    def walk(aggregate):
        for member in aggregate.decls or ():
            if member.name is None and isinstance(member.type, (c_ast.Struct, c_ast.Union)):
                walk(member.type)  # anonymous union / struct
            else:
                out.append((member.name, member.bitsize is not None))

    walk(decl.type)
    return out


def uapi_constants() -> dict:
    return {
        name: value
        for name, value in vars(_uapi).items()
        if name.startswith(CONST_PREFIXES) and isinstance(value, int)
    }


@dataclass
class Probe:
    layouts: dict          # struct -> Layout (the header's)
    constants: dict        # name -> value, for _uapi names the header defines
    missing: list          # _uapi names the header does not define
    header_ioctls: set     # every PERF_EVENT_IOC_* macro of the header
    nr_perf_event_open: int | None


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Probe:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to compile the layout probe")
    if not os.path.exists("/usr/include/linux/perf_event.h"):
        pytest.skip("<linux/perf_event.h> is not installed (linux-libc-dev)")
    tmp = tmp_path_factory.mktemp("abi_probe")
    (tmp / "headers.c").write_text(HEADER_INCLUDES)
    preprocessed = run_gcc(["-E", "-P", "headers.c"], tmp, "preprocess the headers")
    macros_text = run_gcc(["-E", "-dM", "headers.c"], tmp, "list the header's macros")
    macros = set(re.findall(r"^#define\s+([A-Za-z_]\w*)", macros_text, re.M))
    # After preprocessing, an upper-case PERF_* name still in the text can
    # only be an enum constant: macros have been expanded away.
    identifiers = set(re.findall(r"\b[A-Za-z_]\w*\b", preprocessed))

    members = {s: header_members(cut_struct(preprocessed, s)) for s in STRUCTS}

    uapi = uapi_constants()
    in_header = sorted(n for n in uapi if n in macros or n in identifiers)
    missing = sorted(n for n in uapi if n not in in_header)
    header_ioctls = {n for n in macros if n.startswith("PERF_EVENT_IOC_")}

    lines = [
        "#include <stdio.h>",
        "#include <string.h>",
        "#include <stddef.h>",
        "#include <sys/syscall.h>",
        HEADER_INCLUDES,
        "static void dump(const char *s, const char *f, const void *p, size_t n) {",
        "    const unsigned char *b = p;",
        '    printf("BITS %s %s", s, f);',
        "    for (size_t i = 0; i < n; i++)",
        '        if (b[i]) printf(" %zu:%u", i, (unsigned)b[i]);',
        '    printf("\\n");',
        "}",
        "int main(void) {",
    ]
    for struct, fields in members.items():
        ct = f"struct {struct}"
        lines.append(f'    printf("SIZEOF {struct} %zu\\n", sizeof({ct}));')
        for name, bitfield in fields:
            if bitfield:
                lines.append(
                    f"    {{ {ct} s; memset(&s, 0, sizeof s); s.{name} = -1;"
                    f' dump("{struct}", "{name}", &s, sizeof s); }}'
                )
            else:
                lines.append(
                    f'    printf("FIELD {struct} {name} %zu %zu\\n",'
                    f" offsetof({ct}, {name}), sizeof((({ct} *)0)->{name}));"
                )
    for name in in_header + sorted(header_ioctls - set(in_header)):
        lines.append(f'    printf("CONST {name} %llu\\n", (unsigned long long)({name}));')
    lines += [
        "#ifdef __NR_perf_event_open",
        '    printf("NR %ld\\n", (long)__NR_perf_event_open);',
        "#endif",
        "    return 0;",
        "}",
    ]
    (tmp / "probe.c").write_text("\n".join(lines) + "\n")
    run_gcc(["-std=gnu11", "-w", "-o", "probe", "probe.c"], tmp, "compile the layout probe")
    out = subprocess.run([str(tmp / "probe")], capture_output=True, text=True, check=True).stdout

    sizes, fields, constants, nr = {}, {s: {} for s in STRUCTS}, {}, None
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "SIZEOF":
            sizes[rest[0]] = int(rest[1])
        elif kind == "FIELD":
            struct, name, off, size = rest
            fields[struct][name] = plain_field(name, int(off), int(size))
        elif kind == "BITS":
            struct, name, *pairs = rest
            data = bytearray(sizes[struct])
            for pair in pairs:
                i, v = pair.split(":")
                data[int(i)] = int(v)
            # The declared type of every bitfield in these headers is __u32 or
            # __u64; the word it lives in is what describe_bits() reports.
            fields[struct][name] = bitfield_from_bytes(name, bytes(data), 0)
        elif kind == "CONST":
            constants[rest[0]] = int(rest[1])
        elif kind == "NR":
            nr = int(rest[0])
    layouts = {s: Layout(s, sizes[s], fields[s]) for s in STRUCTS}
    return Probe(layouts, constants, missing, header_ioctls, nr)


# --------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------

@dataclass
class Comparison:
    mismatches: list
    compared: list       # names compared (known to both sides)
    bitfields: int       # how many of them are bitfields
    only_perfbp: list    # accepted newer fields
    only_header: list    # header fields perfbp does not declare (warnings)


def compare_layouts(header: Layout, ours: Layout, fixed_size: bool) -> Comparison:
    """Every difference between the header's layout and perfbp's, as text."""
    s = f"struct {header.name}"
    bad, compared, only_ours, only_theirs = [], [], [], []
    nbit = 0

    if fixed_size and header.size != ours.size:
        bad.append(f"{s}: sizeof is {header.size} in the header, {ours.size} in perfbp")
    elif header.size > ours.size:
        bad.append(
            f"{s}: sizeof is {header.size} in the header but only {ours.size} in perfbp: "
            "perfbp's declaration is older than the system header"
        )

    theirs_reserved = frozenset().union(
        *(f.bits for f in header.fields.values() if is_reserved(f.name)))

    for name, mine in ours.fields.items():
        theirs = header.fields.get(name)
        if theirs is not None:
            if theirs.bitfield == mine.bitfield and theirs.bits == mine.bits and (
                    mine.bitfield or (theirs.offset, theirs.size) == (mine.offset, mine.size)):
                compared.append(name)
                nbit += mine.bitfield
                continue
            if is_reserved(name):
                # Both call it reserved but perfbp carved it up (or the header
                # did): only perfbp's named fields around it matter, below.
                continue
            kind = lambda f: "bitfield" if f.bitfield else "field"  # noqa: E731
            bad.append(
                f"{s}.{name}: header has {kind(theirs)} {theirs.describe()}, "
                f"perfbp has {kind(mine)} {mine.describe()}"
            )
            continue
        if is_reserved(name):
            continue
        if min(mine.bits) >= header.size * 8:
            only_ours.append(name)  # appended by a newer UAPI
        elif mine.bits <= theirs_reserved:
            only_ours.append(name)  # carved out of a __reserved_* field
        else:
            overlapped = sorted(f.name for f in header.fields.values() if f.bits & mine.bits)
            bad.append(
                f"{s}.{name}: only perfbp declares it ({mine.describe()}), and it is "
                f"neither beyond the header's sizeof ({header.size}) nor inside a "
                f"__reserved field; it overlaps the header's {', '.join(overlapped)}"
            )

    for name, theirs in header.fields.items():
        if name in ours.fields or is_reserved(name):
            continue
        clash = sorted(f.name for f in ours.fields.values()
                       if not is_reserved(f.name) and f.bits & theirs.bits)
        if clash:
            bad.append(
                f"{s}.{name}: the header has it at {theirs.describe()}, perfbp does not "
                f"declare it and puts {', '.join(clash)} there"
            )
        else:
            # A field of a newer header, in space perfbp keeps reserved:
            # harmless, but perfbp cannot use it (reported as a warning).
            only_theirs.append(name)
    return Comparison(bad, compared, nbit, only_ours, only_theirs)


def format_failures(title: str, failures: list) -> str:
    return f"{title} ({len(failures)}):\n  " + "\n  ".join(failures)


# --------------------------------------------------------------------------
# Layout tests
# --------------------------------------------------------------------------

@pytest.mark.parametrize("struct", list(STRUCTS))
def test_struct_layout_matches_header(probe, struct):
    result = compare_layouts(probe.layouts[struct], cffi_layout(struct), STRUCTS[struct])
    assert not result.mismatches, format_failures(
        f"perfbp.kernel._uapi.CDEF disagrees with <linux/perf_event.h> on struct {struct}",
        result.mismatches)
    if result.only_header:
        import warnings
        warnings.warn(
            f"struct {struct}: the system header has fields perfbp does not declare: "
            f"{', '.join(result.only_header)}", stacklevel=1)


def test_attr_fields_only_perfbp_declares_are_the_newer_uapi(probe):
    """On a 6.1 header these are exactly the 6.3/6.13 additions."""
    result = compare_layouts(probe.layouts["perf_event_attr"],
                             cffi_layout("perf_event_attr"), False)
    newer = {"aux_action", "aux_start_paused", "aux_pause", "aux_resume", "config3"}
    assert set(result.only_perfbp) <= newer, result.only_perfbp


def test_constants_match_header(probe):
    uapi = uapi_constants()
    bad = [
        f"{name}: header {value:#x}, perfbp.kernel._uapi {uapi[name] & U64:#x}"
        for name, value in sorted(probe.constants.items())
        if name in uapi and uapi[name] & U64 != value
    ]
    assert not bad, format_failures("perfbp.kernel._uapi constants differ from the header", bad)


def test_ioctl_numbers_match_header(probe):
    uapi = {n: v for n, v in uapi_constants().items() if n.startswith("PERF_EVENT_IOC_")}
    bad = []
    for name in sorted(probe.header_ioctls | set(uapi)):
        if name not in uapi:
            bad.append(f"{name}: in the header, not defined in perfbp.kernel._uapi")
        elif name not in probe.header_ioctls:
            bad.append(f"{name}: defined in perfbp.kernel._uapi, not in the header")
        elif uapi[name] != probe.constants[name]:
            bad.append(f"{name}: header {probe.constants[name]:#x}, "
                       f"perfbp.kernel._uapi {uapi[name]:#x}")
    assert not bad, format_failures("PERF_EVENT_IOC_* numbers differ", bad)


def test_syscall_number_matches_header(probe):
    if probe.nr_perf_event_open is None:
        pytest.skip("<sys/syscall.h> has no __NR_perf_event_open")
    assert _uapi.NR_PERF_EVENT_OPEN.get(platform.machine()) == probe.nr_perf_event_open
    assert abi.NR_PERF_EVENT_OPEN == probe.nr_perf_event_open


def test_constants_the_header_lacks_are_newer_than_it(probe):
    """Names perfbp has and the (older) header lacks: the newer UAPI only."""
    newer = {"PERF_ATTR_SIZE_VER8", "PERF_FORMAT_LOST", "PERF_RECORD_AUX_OUTPUT_HW_ID",
             "PERF_SAMPLE_WEIGHT_STRUCT", "PERF_SAMPLE_CODE_PAGE_SIZE",
             "PERF_SAMPLE_DATA_PAGE_SIZE"}
    assert set(probe.missing) <= newer, (
        "perfbp.kernel._uapi defines names <linux/perf_event.h> does not know; if they "
        f"are newer UAPI, add them to this list: {sorted(set(probe.missing) - newer)}")


def test_attr_size_comes_from_the_declaration(probe):
    assert abi.ATTR_SIZE == 136 == _uapi.PERF_ATTR_SIZE_VER8
    assert abi.ATTR_SIZE == ffi.sizeof("struct perf_event_attr")
    assert abi.new_attr().size == abi.ATTR_SIZE
    header = probe.constants
    for version in range(9):
        name = f"PERF_ATTR_SIZE_VER{version}"
        if name in header:
            assert getattr(_uapi, name) == header[name], name
    assert abi.MMAP_PAGE_SIZE == probe.layouts["perf_event_mmap_page"].size == 1088
    assert abi.HEADER_SIZE == probe.layouts["perf_event_header"].size == 8


def test_the_comparison_is_not_vacuous(probe):
    """The probe really compared the fields and names; nothing fell through."""
    counts = {}
    for struct, fixed in STRUCTS.items():
        counts[struct] = compare_layouts(probe.layouts[struct], cffi_layout(struct), fixed)
    attr = counts["perf_event_attr"]
    assert len(attr.compared) >= 60, attr.compared
    assert attr.bitfields >= 38, attr.bitfields  # disabled .. sigtrap, __reserved_1
    assert "bp_type" in attr.compared and "sigtrap" in attr.compared
    assert len(counts["perf_event_mmap_page"].compared) >= 30
    assert "data_head" in counts["perf_event_mmap_page"].compared
    assert counts["perf_event_header"].compared == ["type", "misc", "size"]
    assert len(probe.constants) >= 80, sorted(probe.constants)
    ioctls = {n for n in probe.constants if n.startswith("PERF_EVENT_IOC_")}
    assert len(ioctls) == EXPECTED_IOCTLS, sorted(ioctls)
    assert "PERF_TYPE_BREAKPOINT" in probe.constants  # an enum constant
    assert "PERF_ATTR_SIZE_VER7" in probe.constants   # a macro
    assert "HW_BREAKPOINT_W" in probe.constants       # from hw_breakpoint.h


def test_the_comparison_reports_every_difference(probe):
    """Feed compare_layouts() broken layouts: each break must be reported."""
    header = probe.layouts["perf_event_attr"]
    ours = cffi_layout("perf_event_attr")
    fields = dict(ours.fields)
    fields["bp_type"] = plain_field("bp_type", 48, 4)                  # moved
    fields["sample_type"] = plain_field("sample_type", 24, 4)          # shrunk
    pin = fields["pinned"]
    fields["pinned"] = Field("pinned", pin.offset, pin.size, True,
                             frozenset(b + 1 for b in pin.bits))      # bit shifted
    fields["surprise"] = plain_field("surprise", 72, 8)               # overlaps a field
    del fields["clockid"]                                              # gone; space unused
    fields["sample_regs_intr"] = plain_field("sample_regs_intr", 92, 8)  # over clockid
    broken = Layout("perf_event_attr", 120, fields)                   # too small
    result = compare_layouts(header, broken, False)
    text = "\n".join(result.mismatches)
    for needle in ("bp_type", "sample_type", "pinned", "surprise", "clockid",
                   "sample_regs_intr", "sizeof is 128"):
        assert needle in text, f"{needle!r} not reported in:\n{text}"


# --------------------------------------------------------------------------
# abi._check: the one place a failed call becomes OSError
# --------------------------------------------------------------------------

def _software_counter() -> int:
    """A task-clock counter on this thread, or skip if perf is unavailable."""
    attr = abi.new_attr()
    attr.type = _uapi.PERF_TYPE_SOFTWARE
    attr.config = 1  # PERF_COUNT_SW_TASK_CLOCK
    try:
        return abi.perf_event_open(attr, 0, -1)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.ENOSYS, errno.ENOENT, errno.E2BIG):
            pytest.skip(f"perf_event_open is not usable here: {err}")
        raise


def test_check_passes_success_through():
    assert abi._check(0) == 0
    assert abi._check(7) == 7


def test_check_raises_oserror_with_errno():
    ffi.errno = errno.ENOSPC
    with pytest.raises(OSError) as info:
        abi._check(-1)
    assert info.value.errno == errno.ENOSPC
    assert info.value.strerror == os.strerror(errno.ENOSPC)


@pytest.mark.kernel
def test_breakpoint_with_empty_bp_type_is_einval():
    os.close(_software_counter())
    target = ffi.new("uint64_t *")
    attr = abi.new_attr()
    attr.type = _uapi.PERF_TYPE_BREAKPOINT
    attr.bp_type = _uapi.HW_BREAKPOINT_EMPTY
    attr.bp_addr = int(ffi.cast("uintptr_t", target))
    attr.bp_len = _uapi.HW_BREAKPOINT_LEN_8
    attr.disabled = 1
    with pytest.raises(OSError) as info:
        fd = abi.perf_event_open(attr, 0, -1)
        abi.close(fd)  # pragma: no cover - only if the kernel accepted it
    assert info.value.errno == errno.EINVAL, info.value


def test_ioctl_on_bad_fd_is_ebadf():
    with pytest.raises(OSError) as info:
        abi.ioctl(-1, _uapi.PERF_EVENT_IOC_ENABLE)
    assert info.value.errno == errno.EBADF
    for call in (abi.enable, abi.disable, abi.reset, abi.event_id):
        with pytest.raises(OSError) as info:
            call(-1)
        assert info.value.errno == errno.EBADF, call.__name__


@pytest.mark.kernel
def test_read_count_on_closed_fd_is_ebadf():
    fd = _software_counter()
    try:
        assert abi.read_count(fd) >= 0
        assert abi.event_id(fd) > 0
    finally:
        abi.close(fd)
    with pytest.raises(OSError) as info:
        abi.read_count(fd)
    assert info.value.errno == errno.EBADF


def test_a_broken_declaration_fails_against_the_header(probe):
    """End to end: a cffi declaration with two slips, measured like perfbp's."""
    from cffi import FFI

    cdef = _uapi.CDEF
    slips = [("__u32 bp_type;", "__u64 bp_type;"),
             ("precise_ip     : 2,", "precise_ip     : 3,")]
    for good, bad in slips:
        assert good in cdef, f"the CDEF no longer contains {good!r}: update this test"
        cdef = cdef.replace(good, bad)
    broken = FFI()
    broken.cdef(cdef)
    result = compare_layouts(probe.layouts["perf_event_attr"],
                             cffi_layout("perf_event_attr", broken), False)
    text = "\n".join(result.mismatches)
    for needle in ("perf_event_attr.bp_type", "perf_event_attr.precise_ip",
                   "perf_event_attr.bp_addr", "perf_event_attr.mmap_data"):
        assert needle in text, f"{needle!r} not reported in:\n{text}"


# --------------------------------------------------------------------------
# The declarations precompiled for cffi (perfbp.kernel._abi_ffi)
# --------------------------------------------------------------------------

def test_the_precompiled_declarations_are_current():
    """``_abi_ffi.py`` is what ``make ffi`` writes for today's ``_uapi.CDEF``."""
    from perfbp.kernel import _ffi_build

    with open(_ffi_build.PATH) as committed:
        assert committed.read() == _ffi_build.module_text(), (
            "perfbp/kernel/_abi_ffi.py is stale: run `make ffi` and commit it")


def test_abi_uses_the_precompiled_declarations():
    from perfbp.kernel import _abi_ffi

    assert abi.ffi is _abi_ffi.ffi


@pytest.mark.parametrize("struct", sorted(STRUCTS))
def test_precompiled_and_parsed_declarations_lay_out_alike(struct, monkeypatch):
    """Without the precompiled module (a cffi too old to load it), abi parses
    the cdef itself, and the layout is the same, bit for bit."""
    monkeypatch.setitem(sys.modules, "perfbp.kernel._abi_ffi", None)  # import fails
    parsed = abi._load_ffi()
    assert parsed is not abi.ffi
    assert cffi_layout(struct, parsed) == cffi_layout(struct, abi.ffi)


# --------------------------------------------------------------------------
# The BPF declarations: the members of union bpf_attr perfbp declares, the
# BPF_* constants, the context's addr and __NR_bpf, against <linux/bpf.h>
# --------------------------------------------------------------------------

#: perfbp's struct for each bpf(2) command: one anonymous member of union bpf_attr
BPF_ATTR_STRUCTS = ("bpf_attr_map_create", "bpf_attr_map_elem", "bpf_attr_prog_load")
BPF_INCLUDES = ("#include <linux/bpf.h>\n#include <linux/bpf_perf_event.h>\n"
                "#include <sys/syscall.h>\n")


def bpf_constants() -> dict:
    return {name: value for name, value in vars(_uapi).items()
            if (name.startswith("BPF_") or name == "MAX_BPF_REG") and isinstance(value, int)}


@pytest.fixture(scope="module")
def bpf_probe(tmp_path_factory) -> dict:
    """``{"FIELD name": (offset, size), "CONST name": value, "ADDR": offset,
    "NR": __NR_bpf}`` from a C probe compiled against the system's headers."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to compile the layout probe")
    if not os.path.exists("/usr/include/linux/bpf.h"):
        pytest.skip("<linux/bpf.h> is not installed (linux-libc-dev)")
    tmp = tmp_path_factory.mktemp("bpf_probe")
    lines = ["#include <stdio.h>", "#include <stddef.h>", BPF_INCLUDES, "int main(void) {"]
    for struct in BPF_ATTR_STRUCTS:
        for name, _field in ffi.typeof(f"struct {struct}").fields:
            lines.append(f'    printf("FIELD {name} %zu %zu\\n", offsetof(union bpf_attr, '
                         f'{name}), sizeof(((union bpf_attr *)0)->{name}));')
    for name in sorted(bpf_constants()):
        lines.append(f'    printf("CONST {name} %lld\\n", (long long)({name}));')
    lines += ['    printf("ADDR %zu\\n", offsetof(struct bpf_perf_event_data, addr));',
              '    printf("NR %ld\\n", (long)__NR_bpf);', "    return 0;", "}"]
    (tmp / "bpf_probe.c").write_text("\n".join(lines) + "\n")
    run_gcc(["-std=gnu11", "-w", "-o", "bpf_probe", "bpf_probe.c"], tmp,
            "compile the BPF layout probe")
    out = subprocess.run([str(tmp / "bpf_probe")], capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind in ("FIELD", "CONST"):
            found[f"{kind} {rest[0]}"] = tuple(int(x) for x in rest[1:])
        else:
            found[kind] = int(rest[0])
    return found


@pytest.mark.parametrize("struct", BPF_ATTR_STRUCTS)
def test_bpf_attr_members_match_header(bpf_probe, struct):
    ours = {name: (f.offset, ffi.sizeof(f.type))
            for name, f in ffi.typeof(f"struct {struct}").fields}
    theirs = {name: bpf_probe[f"FIELD {name}"] for name in ours}
    assert ours == theirs
    # perfbp passes sizeof(its struct) as the attr's size: it ends where its
    # last field ends, so the kernel sees no bytes perfbp did not mean
    last = max(off + size for off, size in ours.values())
    align = ffi.alignof(f"struct {struct}")
    assert ffi.sizeof(f"struct {struct}") == (last + align - 1) // align * align


def test_bpf_constants_match_header(bpf_probe):
    ours = bpf_constants()
    assert len(ours) >= 77  # every opcode part, register, command, helper, type
    bad = [f"{name}: header {bpf_probe[f'CONST {name}'][0]}, perfbp {value}"
           for name, value in sorted(ours.items()) if bpf_probe[f"CONST {name}"][0] != value]
    assert not bad, format_failures("BPF constants differ from <linux/bpf.h>", bad)


def test_bpf_context_addr_and_syscall_number_match_header(bpf_probe):
    assert _uapi.BPF_PERF_EVENT_DATA_ADDR[platform.machine()] == bpf_probe["ADDR"]
    assert _uapi.NR_BPF[platform.machine()] == abi.NR_BPF == bpf_probe["NR"]
