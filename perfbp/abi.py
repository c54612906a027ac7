"""The ABI layer: the only module that touches cffi, the syscall and the ioctls.

It hands the declarations of :mod:`perfbp._uapi` to cffi (ABI mode, no
compiler needed at install time), opens events with ``perf_event_open(2)``,
runs the ``PERF_EVENT_IOC_*`` ioctls and reads counts.  Every failure of a
call is turned into :class:`OSError` with the call's errno by :func:`_check`,
the one place that does so; the layers above turn OSError into perfbp's own
exceptions with the context they know (what was asked, on which target).
"""

from __future__ import annotations

import os
import platform

from cffi import FFI

from . import _uapi
from ._uapi import (
    PERF_EVENT_IOC_DISABLE,
    PERF_EVENT_IOC_ENABLE,
    PERF_EVENT_IOC_ID,
    PERF_EVENT_IOC_MODIFY_ATTRIBUTES,
    PERF_EVENT_IOC_RESET,
    PERF_EVENT_IOC_SET_OUTPUT,
    PERF_FLAG_FD_CLOEXEC,
)

ffi = FFI()
ffi.cdef(_uapi.CDEF)
lib = ffi.dlopen(None)

MACHINE = platform.machine()
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


def copy_attr(attr):
    """A new ``struct perf_event_attr *`` holding the same bytes as ``attr``."""
    new = ffi.new("struct perf_event_attr *")
    ffi.memmove(new, attr, ATTR_SIZE)
    return new


def attr_bytes(attr) -> bytes:
    """The raw bytes of an attr (for perf.data headers and tests)."""
    return bytes(ffi.buffer(attr, ATTR_SIZE))


def perf_event_open(attr, pid: int, cpu: int, group_fd: int = -1,
                    flags: int = PERF_FLAG_FD_CLOEXEC) -> int:
    """``perf_event_open(2)``: return the new event's file descriptor.

    Raises:
        OSError: with the kernel's errno.
    """
    if NR_PERF_EVENT_OPEN < 0:
        raise OSError(38, f"perf_event_open has no known syscall number on {MACHINE}")
    return _check(lib.syscall(_NR, attr, _long("long", pid), _long("long", cpu),
                              _long("long", group_fd), _long("long", flags)))


def ioctl(fd: int, request: int, arg: int = 0) -> int:
    """An ioctl whose argument is an integer (ENABLE, DISABLE, RESET, SET_OUTPUT)."""
    return _check(lib.ioctl(fd, request, _long("unsigned long", arg) if arg else _ZERO))


def enable(fd: int) -> None:
    _check(lib.ioctl(fd, PERF_EVENT_IOC_ENABLE, _ZERO))


def disable(fd: int) -> None:
    _check(lib.ioctl(fd, PERF_EVENT_IOC_DISABLE, _ZERO))


def reset(fd: int) -> None:
    _check(lib.ioctl(fd, PERF_EVENT_IOC_RESET, _ZERO))


def set_output(fd: int, target_fd: int) -> None:
    """Send ``fd``'s records to ``target_fd``'s ring buffer (-1: back to its own)."""
    _check(lib.ioctl(fd, PERF_EVENT_IOC_SET_OUTPUT, _long("long", target_fd)))


def event_id(fd: int) -> int:
    """The kernel's unique id of the event (PERF_EVENT_IOC_ID)."""
    out = ffi.new("uint64_t *")
    _check(lib.ioctl(fd, PERF_EVENT_IOC_ID, out))
    return int(out[0])


def modify_attributes(fd: int, attr) -> None:
    """PERF_EVENT_IOC_MODIFY_ATTRIBUTES: re-target a breakpoint in place.

    Only ``bp_addr``, ``bp_type``, ``bp_len`` and ``disabled`` may differ from
    the attr the event was opened with; anything else is EINVAL.
    """
    _check(lib.ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES, attr))


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
