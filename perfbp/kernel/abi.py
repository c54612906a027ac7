"""The ABI layer: the only module that touches cffi, the syscall and the ioctls.

It hands the declarations of :mod:`perfbp.kernel._uapi` to cffi (ABI mode, no
compiler needed at install time; the declarations come precompiled in
:mod:`perfbp.kernel._abi_ffi`, see :mod:`perfbp.kernel._ffi_build`), opens events with ``perf_event_open(2)``,
runs the ``PERF_EVENT_IOC_*`` ioctls and reads counts, and makes BPF maps and
programs with ``bpf(2)`` and attaches them to events (``PERF_EVENT_IOC_SET_BPF``).  Every failure of a
call is turned into :class:`OSError` with the call's errno by :func:`_check`,
the one place that does so; the layers above turn OSError into perfbp's own
exceptions with the context they know (what was asked, on which target).
"""

from __future__ import annotations

import fcntl as _fcntl
import os
import struct

from cffi import FFI

from . import _uapi
from ._uapi import (
    PERF_EVENT_IOC_DISABLE,
    PERF_EVENT_IOC_ENABLE,
    PERF_EVENT_IOC_ID,
    PERF_EVENT_IOC_MODIFY_ATTRIBUTES,
    PERF_EVENT_IOC_RESET,
    PERF_EVENT_IOC_SET_BPF,
    PERF_EVENT_IOC_SET_OUTPUT,
    PERF_FLAG_FD_CLOEXEC,
)



def _load_ffi():
    """The FFI of ``_uapi.CDEF``: the precompiled tables, or the cdef parsed
    here when this cffi cannot load them (a cffi older than the one that wrote
    them refuses their version with ImportError)."""
    try:
        from ._abi_ffi import ffi as precompiled
    except ImportError:
        parsed = FFI()
        parsed.cdef(_uapi.CDEF)
        return parsed
    return precompiled


ffi = _load_ffi()
lib = ffi.dlopen(None)

MACHINE = os.uname().machine  # platform.machine(), without importing platform
try:
    NR_PERF_EVENT_OPEN = _uapi.NR_PERF_EVENT_OPEN[MACHINE]
except KeyError:  # pragma: no cover - depends on the machine
    NR_PERF_EVENT_OPEN = -1

#: ``sizeof(struct perf_event_attr)`` as declared: what ``attr.size`` is set to.
ATTR_SIZE = ffi.sizeof("struct perf_event_attr")
MMAP_PAGE_SIZE = ffi.sizeof("struct perf_event_mmap_page")
HEADER_SIZE = ffi.sizeof("struct perf_event_header")

_long = ffi.cast
_NR = ffi.cast("long", NR_PERF_EVENT_OPEN)
_ZERO = ffi.cast("unsigned long", 0)


def _check(ret: int) -> int:
    """Return ``ret``, or raise OSError with the call's errno when it is < 0."""
    if ret < 0:
        err = ffi.errno
        raise OSError(err, os.strerror(err))
    return ret


def new_attr():
    """A zeroed ``struct perf_event_attr *`` with ``size`` from the declaration."""
    attr = ffi.new("struct perf_event_attr *")
    attr.size = ATTR_SIZE
    return attr


_ATTR_PTR = ffi.typeof("struct perf_event_attr *")


def attr_from_bytes(raw: bytes):
    """A new ``struct perf_event_attr *`` initialized from ``raw``."""
    attr = ffi.new(_ATTR_PTR)
    ffi.memmove(attr, raw, ATTR_SIZE)
    return attr


def copy_attr(attr):
    """A new ``struct perf_event_attr *`` holding the same bytes as ``attr``."""
    new = ffi.new("struct perf_event_attr *")
    ffi.memmove(new, attr, ATTR_SIZE)
    return new


def attr_bytes(attr) -> bytes:
    """The raw bytes of an attr (for perf.data headers and tests)."""
    return bytes(ffi.buffer(attr, ATTR_SIZE))


def _fixed_syscall():
    """``syscall(2)`` called through a fixed prototype, when that is exact.

    glibc's ``syscall`` is variadic; cffi then needs every argument cast to
    its C type (four ``ffi.cast`` per open, about 1 µs).  On x86-64 and Linux
    aarch64 a variadic callee receives integer and pointer arguments exactly
    as a fixed-prototype one does (and glibc's ``syscall`` is an assembly stub
    that never reads x86's %al vector count), so there perfbp calls it through
    a function pointer with a fixed prototype.  Elsewhere: the variadic path.
    """
    if MACHINE not in ("x86_64", "aarch64"):
        return None
    import ctypes

    address = ctypes.cast(ctypes.CDLL(None).syscall, ctypes.c_void_p).value
    return ffi.cast("long (*)(long, struct perf_event_attr *, long, long, long, unsigned long)",
                    address)


_syscall6 = _fixed_syscall()


def _perf_event_open_variadic(attr, pid: int, cpu: int, group_fd: int = -1,
                              flags: int = PERF_FLAG_FD_CLOEXEC) -> int:
    if NR_PERF_EVENT_OPEN < 0:
        raise OSError(38, f"perf_event_open has no known syscall number on {MACHINE}")
    return _check(lib.syscall(_NR, attr, _long("long", pid), _long("long", cpu),
                              _long("long", group_fd), _long("long", flags)))


def _perf_event_open_fixed(attr, pid: int, cpu: int, group_fd: int = -1,
                           flags: int = PERF_FLAG_FD_CLOEXEC, _call=_syscall6,
                           _nr=NR_PERF_EVENT_OPEN, _ffi=ffi) -> int:
    fd = _call(_nr, attr, pid, cpu, group_fd, flags)
    if fd < 0:
        err = _ffi.errno
        raise OSError(err, os.strerror(err))
    return fd


_perf_event_open = _perf_event_open_fixed if _syscall6 is not None else _perf_event_open_variadic


def perf_event_open(attr, pid: int, cpu: int, group_fd: int = -1,
                    flags: int = PERF_FLAG_FD_CLOEXEC) -> int:
    """``perf_event_open(2)``: return the new event's file descriptor.

    Raises:
        OSError: with the kernel's errno.
    """
    return _perf_event_open(attr, pid, cpu, group_fd, flags)


if _syscall6 is not None:  # the same function, without a second frame
    perf_event_open = _perf_event_open_fixed  # noqa: F811
    perf_event_open.__doc__ = """``perf_event_open(2)``: return the new event's file descriptor.

    Raises:
        OSError: with the kernel's errno.
    """


NR_PTRACE = {"x86_64": 101, "aarch64": 117}.get(MACHINE, -1)
PTRACE_PEEKTEXT = 1
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SYSCALL = 24
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SEIZE = 0x4206
PTRACE_LISTEN = 0x4208
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_STOP = 128
#: x86-64 ``struct user_regs_struct``: 27 u64; rip is the 17th
USER_REGS_WORDS = 27
USER_REGS_RIP = 16
#: the other words of ``struct user_regs_struct`` that perfbp reads
USER_REGS_R9, USER_REGS_R8, USER_REGS_RAX, USER_REGS_ORIG_RAX = 8, 9, 10, 15


def ptrace(request: int, pid: int = 0, addr: int = 0, data: int = 0) -> int:
    """``ptrace(2)``, through ``syscall`` (glibc's wrapper is variadic too).

    Raises:
        OSError: with the kernel's errno.
    """
    if NR_PTRACE < 0:
        raise OSError(38, f"ptrace has no known syscall number on {MACHINE}")
    return _check(lib.syscall(_long("long", NR_PTRACE), _long("long", request),
                              _long("long", pid), _long("long", addr), _long("long", data)))


def ptrace_peek(pid: int, addr: int) -> int:
    """PTRACE_PEEKTEXT through the raw syscall: the word is stored at ``data``."""
    out = ffi.new("uint64_t *")
    _check(lib.syscall(_long("long", NR_PTRACE), _long("long", PTRACE_PEEKTEXT),
                       _long("long", pid), _long("long", addr), out))
    return int(out[0])


def ptrace_siginfo(pid: int) -> "tuple[int, int, int]":
    """PTRACE_GETSIGINFO: ``(si_signo, si_code, si_addr)`` of the signal a
    tracee is stopped for (``siginfo_t``: signo at 0, code at 8, addr at 16).

    Raises:
        OSError: EINVAL for a group-stop, ESRCH when the tracee is gone.
    """
    buf = ffi.new("uint8_t[128]")
    _check(lib.syscall(_long("long", NR_PTRACE), _long("long", PTRACE_GETSIGINFO),
                       _long("long", pid), _long("long", 0), buf))
    raw = bytes(ffi.buffer(buf, 24))
    signo, _errno, code = struct.unpack_from("<iii", raw, 0)
    return signo, code, struct.unpack_from("<Q", raw, 16)[0]


def ptrace_eventmsg(pid: int) -> int:
    """PTRACE_GETEVENTMSG: the new task of a fork/clone stop, the former
    thread id of an exec stop."""
    out = ffi.new("unsigned long *")
    _check(lib.syscall(_long("long", NR_PTRACE), _long("long", PTRACE_GETEVENTMSG),
                       _long("long", pid), _long("long", 0), out))
    return int(out[0])


def ptrace_regs(pid: int):
    """PTRACE_GETREGS: a stopped tracee's ``struct user_regs_struct``."""
    regs = ffi.new(f"uint64_t[{USER_REGS_WORDS}]")
    _check(lib.syscall(_long("long", NR_PTRACE), _long("long", PTRACE_GETREGS),
                       _long("long", pid), _long("long", 0), regs))
    return regs


# --- synchronous SIGTRAP (attr.sigtrap), for hit callbacks ----------------------------
#
# glibc x86-64 `struct sigaction`: the handler at 0, sa_mask (128 bytes) at
# 8, sa_flags at 136, sa_restorer at 144: 152 bytes.  `siginfo_t` of a
# TRAP_PERF signal: si_code at 8, si_addr at 16, si_perf_data at 24,
# si_perf_type at 32 (include/uapi/asm-generic/siginfo.h).
SIGACTION_SIZE = 152
SA_SIGINFO = 4
SA_RESTART = 0x10000000
SIGTRAP = 5
TRAP_PERF = 6
_SIGINFO_CODE, _SIGINFO_ADDR, _SIGINFO_PERF_DATA = 8, 16, 24


def install_sigtrap(handler):
    """Run ``handler(code, addr, perf_data)`` synchronously, inside the
    SIGTRAP itself, in the thread that took it (a C-level SA_SIGINFO handler
    calling back into Python).  Returns a token for :func:`restore_sigtrap`.

    Raises:
        OSError: sigaction failed; NotImplementedError: not x86-64.
    """
    if MACHINE != "x86_64":
        raise NotImplementedError("synchronous hit callbacks are implemented for x86-64")

    def trampoline(sig, info, ctx):
        try:
            raw = ffi.cast("char *", info)
            code = ffi.cast("int *", raw + _SIGINFO_CODE)[0]
            addr = int(ffi.cast("uint64_t *", raw + _SIGINFO_ADDR)[0])
            data = int(ffi.cast("uint64_t *", raw + _SIGINFO_PERF_DATA)[0])
            handler(code, addr, data)
        except BaseException:  # never unwind through the signal frame
            pass

    callback = ffi.callback("void(int, void *, void *)", trampoline)
    act = ffi.new(f"char[{SIGACTION_SIZE}]")
    old = ffi.new(f"char[{SIGACTION_SIZE}]")
    ffi.cast("void **", act)[0] = ffi.cast("void *", callback)
    ffi.cast("int *", act + 136)[0] = SA_SIGINFO | SA_RESTART
    _check(lib.sigaction(SIGTRAP, act, old))
    return (callback, old)


def restore_sigtrap(token) -> None:
    """Put back the SIGTRAP disposition :func:`install_sigtrap` replaced."""
    _callback, old = token
    _check(lib.sigaction(SIGTRAP, old, ffi.NULL))


# The argument-less ioctls go through fcntl.ioctl(fd, request), which raises
# OSError with the errno itself and costs a third of a variadic cffi call.
# (fcntl.ioctl with an explicit 0 argument is slower: it copies a buffer.)

def _bad_fd(fd: int) -> None:
    """fcntl refuses a negative fd with ValueError; the kernel's answer is EBADF."""
    raise OSError(9, f"{os.strerror(9)} (fd {fd})")


def ioctl(fd: int, request: int, arg: int = 0) -> int:
    """An ioctl whose argument is an integer (ENABLE, DISABLE, RESET, SET_OUTPUT)."""
    if fd < 0:
        _bad_fd(fd)
    if not arg:
        return _fcntl.ioctl(fd, request)
    return _check(lib.ioctl(fd, request, _long("unsigned long", arg)))


def enable(fd: int) -> None:
    if fd < 0:
        _bad_fd(fd)
    _fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE)


def disable(fd: int) -> None:
    if fd < 0:
        _bad_fd(fd)
    _fcntl.ioctl(fd, PERF_EVENT_IOC_DISABLE)


def reset(fd: int) -> None:
    if fd < 0:
        _bad_fd(fd)
    _fcntl.ioctl(fd, PERF_EVENT_IOC_RESET)


def set_output(fd: int, target_fd: int) -> None:
    """Send ``fd``'s records to ``target_fd``'s ring buffer (-1: back to its own)."""
    _check(lib.ioctl(fd, PERF_EVENT_IOC_SET_OUTPUT, _long("long", target_fd)))


def event_id(fd: int) -> int:
    """The kernel's unique id of the event (PERF_EVENT_IOC_ID)."""
    out = ffi.new("uint64_t *")
    _check(lib.ioctl(fd, PERF_EVENT_IOC_ID, out))
    return int(out[0])


def attr_view(attr):
    """A writable buffer over an attr, for :func:`modify_attributes`."""
    return ffi.buffer(attr, ATTR_SIZE)


def modify_attributes(fd: int, attr, view=None) -> None:
    """PERF_EVENT_IOC_MODIFY_ATTRIBUTES: re-target a breakpoint in place.

    Only ``bp_addr``, ``bp_type``, ``bp_len`` and ``disabled`` may differ from
    the attr the event was opened with; anything else is EINVAL.  ``view``
    (from :func:`attr_view`) saves building the buffer on every call.
    """
    # mutate_flag=True: fcntl passes the buffer's own address, no copy
    if fd < 0:
        _bad_fd(fd)
    _fcntl.ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES,
                 view if view is not None else ffi.buffer(attr, ATTR_SIZE), True)


def read_u64s(fd: int, count: int = 1) -> tuple[int, ...]:
    """Read ``count`` native u64 values from an event (``read(2)``)."""
    data = os.read(fd, 8 * count)
    if len(data) != 8 * count:
        raise OSError(5, f"short read from perf event fd {fd}: {len(data)} bytes")
    if count == 1:
        return (int.from_bytes(data, "little"),)
    return tuple(int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8))


def read_count(fd: int) -> int:
    """The count of an event opened with ``read_format = 0``."""
    data = os.read(fd, 8)
    if len(data) != 8:
        raise OSError(5, f"short read from perf event fd {fd}: {len(data)} bytes")
    return int.from_bytes(data, "little")


def close(fd: int) -> None:
    os.close(fd)


# --- bpf(2): maps and programs ---------------------------------------------------------
#
# Each command takes its own member of ``union bpf_attr`` (declared in _uapi
# as a struct of its own) and its size; the kernel zero-fills the rest.

NR_BPF = _uapi.NR_BPF.get(MACHINE, -1)
#: A verifier log of this size holds the whole log of any program perfbp makes.
BPF_LOG_SIZE = 1 << 18


def _bpf(cmd: int, attr, ctype: str) -> int:
    if NR_BPF < 0:
        raise OSError(38, f"bpf has no known syscall number on {MACHINE}")
    return _check(lib.syscall(_long("long", NR_BPF), _long("long", cmd), attr,
                              _long("unsigned long", ffi.sizeof(ctype))))


def _name(text: str) -> bytes:
    """A map's or program's name as the kernel takes it: at most 15 bytes of
    letters, digits, ``_`` and ``.``."""
    keep = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in text)
    return keep[:_uapi.BPF_OBJ_NAME_LEN - 1].encode()


def bpf_map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
                   map_flags: int = 0, name: str = "") -> int:
    """``BPF_MAP_CREATE``: return the new map's file descriptor (close-on-exec).

    Raises:
        OSError: with the kernel's errno (EPERM without CAP_BPF).
    """
    attr = ffi.new("struct bpf_attr_map_create *")
    attr.map_type = map_type
    attr.key_size = key_size
    attr.value_size = value_size
    attr.max_entries = max_entries
    attr.map_flags = map_flags
    attr.map_name = _name(name)
    return _bpf(_uapi.BPF_MAP_CREATE, attr, "struct bpf_attr_map_create")


def bpf_map_lookup_elem(map_fd: int, key: bytes, value_size: int) -> bytes:
    """``BPF_MAP_LOOKUP_ELEM``: the value stored under ``key``.

    Raises:
        OSError: ENOENT when there is none.
    """
    attr = ffi.new("struct bpf_attr_map_elem *")
    k = ffi.from_buffer(key)
    v = ffi.new("char[]", value_size)
    attr.map_fd = map_fd
    attr.key = int(ffi.cast("uintptr_t", k))
    attr.value = int(ffi.cast("uintptr_t", v))
    _bpf(_uapi.BPF_MAP_LOOKUP_ELEM, attr, "struct bpf_attr_map_elem")
    return bytes(ffi.buffer(v, value_size))


def bpf_map_update_elem(map_fd: int, key: bytes, value: bytes,
                        flags: int = _uapi.BPF_ANY) -> None:
    """``BPF_MAP_UPDATE_ELEM``: store ``value`` under ``key``.

    Raises:
        OSError: with the kernel's errno.
    """
    attr = ffi.new("struct bpf_attr_map_elem *")
    k = ffi.from_buffer(key)
    v = ffi.from_buffer(value)
    attr.map_fd = map_fd
    attr.key = int(ffi.cast("uintptr_t", k))
    attr.value = int(ffi.cast("uintptr_t", v))
    attr.flags = flags
    _bpf(_uapi.BPF_MAP_UPDATE_ELEM, attr, "struct bpf_attr_map_elem")


def bpf_prog_load(prog_type: int, insns: bytes, license: str = "GPL", name: str = "",
                  log_size: int = BPF_LOG_SIZE) -> int:
    """``BPF_PROG_LOAD``: verify and load a program; return its file
    descriptor (close-on-exec).

    The program is first loaded without a log (the verifier is faster so).
    When the kernel refuses it, it is loaded again with the verifier's log
    (``log_level`` 1) to say why.

    Raises:
        OSError: with the kernel's errno; its ``log`` attribute holds the
            verifier's log of the refusal ("" when the kernel wrote none,
            as for EPERM).
    """
    code = ffi.from_buffer(insns)
    lic = ffi.new("char[]", license.encode())
    attr = ffi.new("struct bpf_attr_prog_load *")
    attr.prog_type = prog_type
    attr.insn_cnt = len(insns) // 8
    attr.insns = int(ffi.cast("uintptr_t", code))
    attr.license = int(ffi.cast("uintptr_t", lic))
    attr.prog_name = _name(name)
    try:
        return _bpf(_uapi.BPF_PROG_LOAD, attr, "struct bpf_attr_prog_load")
    except OSError as first:
        refused = first
    buf = ffi.new("char[]", log_size)
    attr.log_level = 1
    attr.log_size = log_size
    attr.log_buf = int(ffi.cast("uintptr_t", buf))
    try:
        fd = _bpf(_uapi.BPF_PROG_LOAD, attr, "struct bpf_attr_prog_load")
    except OSError:
        refused.log = ffi.string(buf).decode("utf-8", "replace")
        raise refused from None
    os.close(fd)  # loaded the second time: the refusal was not the verifier's
    refused.log = ""
    raise refused


def bpf_map_mmap(map_fd: int):
    """Map a ``BPF_F_MMAPABLE`` array map's values into this process (one
    page, read-write, shared with the kernel): an ``mmap.mmap``.

    Raises:
        OSError: with the kernel's errno.
    """
    return _mmap.mmap(map_fd, _mmap.PAGESIZE, _mmap.MAP_SHARED,
                      _mmap.PROT_READ | _mmap.PROT_WRITE)


def set_bpf(fd: int, prog_fd: int) -> None:
    """``PERF_EVENT_IOC_SET_BPF``: run the program on every overflow (for a
    breakpoint with ``sample_period`` 1: every hit) of the event; the sample
    is written only when it returns non-zero.  Events the kernel inherits
    from this one (new threads, forked children) run it too.

    Raises:
        OSError: EEXIST when the event has a program already, EINVAL when the
            program is not a ``BPF_PROG_TYPE_PERF_EVENT`` one.
    """
    _check(lib.ioctl(fd, PERF_EVENT_IOC_SET_BPF, _long("unsigned long", prog_fd)))


# --- the mmap ring buffer ------------------------------------------------------------
#
# perf's ring protocol (include/uapi/linux/perf_event.h, "Control data for the
# mmap() data buffer"): read data_head, then smp_rmb(), then the records; then
# smp_mb() and store data_tail.  The kernel pairs these with its own barriers
# in perf_output_put_handle().
#
# x86-64 is TSO: loads are not reordered with older loads, and stores are not
# reordered with older loads, so a plain 64-bit load of data_head and a plain
# 64-bit store of data_tail already have acquire and release semantics in
# hardware; cffi reads and writes the u64 fields with single aligned moves, and
# every access is a separate C call, so no compiler can reorder them either.
#
# arm64 (and other weakly ordered machines) need real barriers: an acquire load
# of data_head (LDAR, or LDR + DMB ISHLD) and a release store of data_tail
# (STLR, or DMB ISH + STR).  Python cannot emit those, so there perfbp compiles
# a three-function helper with cffi's API mode on first use
# (__atomic_load_n / __atomic_store_n with ACQUIRE / RELEASE), which needs a C
# compiler on that machine.  PERFBP_FORCE_ATOMICS=1 selects the compiled
# helper on x86 too, which is how the tests exercise it.

import mmap as _mmap

_ATOMICS_SRC = """
#include <stdint.h>
uint64_t perfbp_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void perfbp_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
"""
_ATOMICS_CDEF = """
uint64_t perfbp_load_acquire(const uint64_t *p);
void perfbp_store_release(uint64_t *p, uint64_t v);
"""
_atomics = None


def _compiled_atomics():
    """Build (once) and load the acquire/release helper for weak machines."""
    global _atomics
    if _atomics is None:
        import hashlib
        import importlib.util
        import tempfile

        tag = hashlib.sha1(_ATOMICS_SRC.encode()).hexdigest()[:12]
        build = os.path.join(tempfile.gettempdir(), f"perfbp-atomics-{os.getuid()}-{tag}")
        os.makedirs(build, mode=0o700, exist_ok=True)
        name = f"_perfbp_atomics_{tag}"
        builder = FFI()
        builder.cdef(_ATOMICS_CDEF)
        builder.set_source(name, _ATOMICS_SRC)
        path = builder.compile(tmpdir=build, verbose=False)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _atomics = module
    return _atomics


def _needs_compiled_atomics() -> bool:
    return os.environ.get("PERFBP_FORCE_ATOMICS") == "1" or MACHINE not in ("x86_64", "i686", "i386")


class RingMapping:
    """The mmap of one perf ring: a metadata page and 2^n data pages.

    Attributes:
        data: a memoryview of the data area (``data_size`` bytes).
        data_size: bytes in the data area.
    """

    def __init__(self, fd: int, data_pages: int, writable: bool = True) -> None:
        if data_pages <= 0 or data_pages & (data_pages - 1):
            raise ValueError(f"data_pages must be a power of two, not {data_pages}")
        page = _mmap.PAGESIZE
        prot = _mmap.PROT_READ | (_mmap.PROT_WRITE if writable else 0)
        self._mm = _mmap.mmap(fd, (1 + data_pages) * page, _mmap.MAP_SHARED, prot)
        self._page = ffi.cast("struct perf_event_mmap_page *", ffi.from_buffer(self._mm))
        self.data_offset = int(self._page.data_offset) or page
        self.data_size = int(self._page.data_size) or data_pages * page
        self.data = memoryview(self._mm)[self.data_offset:self.data_offset + self.data_size]
        if _needs_compiled_atomics():
            lib_ = _compiled_atomics()
            head_ptr = ffi.cast("uint64_t *", ffi.addressof(self._page, "data_head"))
            tail_ptr = ffi.cast("uint64_t *", ffi.addressof(self._page, "data_tail"))
            head_ptr2 = lib_.ffi.cast("uint64_t *", int(ffi.cast("uintptr_t", head_ptr)))
            tail_ptr2 = lib_.ffi.cast("uint64_t *", int(ffi.cast("uintptr_t", tail_ptr)))
            self.load_head = lambda: int(lib_.lib.perfbp_load_acquire(head_ptr2))
            self.store_tail = lambda v: lib_.lib.perfbp_store_release(tail_ptr2, v)
            self.load_tail = lambda: int(lib_.lib.perfbp_load_acquire(tail_ptr2))

    # x86: plain aligned 64-bit accesses (see the comment above)
    def load_head(self) -> int:
        """``data_head``, read with acquire ordering."""
        return int(self._page.data_head)

    def store_tail(self, value: int) -> None:
        """Store ``data_tail`` with release ordering: the records before it
        are consumed and the kernel may overwrite them."""
        self._page.data_tail = value

    def load_tail(self) -> int:
        return int(self._page.data_tail)

    def close(self) -> None:
        self.data.release()
        self._page = None
        try:
            self._mm.close()
        except BufferError:  # a decoded view still refers to it; freed with it
            pass
