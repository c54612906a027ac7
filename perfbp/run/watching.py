"""``perfbp.watch()``: watch Python-visible memory in a few lines.

The target is an address (with a length), a ctypes object, or any object
with the buffer protocol — ``bytearray``, ``memoryview``, ``array.array``, a
numpy array, an element or a slice of one.  Ranges the debug registers cannot
take in one piece are split over several (planned, all-or-nothing).  Hits are
counted exactly by the kernel; with ``sample=True`` every hit is also a
sample (ip, thread, time, CPU).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from ..kernel import abi
from ..errors import InvalidBreakpoint, NoBreakpointSlots, Unsupported
from ..kernel.events import EventOptions, Target
from ..kernel.counter import Counter
from ..planning.planner import Watch, plan


def address_of(obj: Any, length: "int | None" = None) -> "tuple[int, int]":
    """``(address, length)`` of a watch target.

    Raises:
        InvalidBreakpoint: the object exposes no memory perfbp can find.
    """
    if isinstance(obj, int):
        if length is None:
            raise InvalidBreakpoint("watching a bare address needs a length: "
                                    "perfbp.watch(addr, length=8)")
        return obj, length
    if isinstance(obj, ctypes._SimpleCData) or isinstance(obj, (ctypes.Array, ctypes.Structure,
                                                                  ctypes.Union)):
        return ctypes.addressof(obj), length or ctypes.sizeof(obj)
    iface = getattr(obj, "__array_interface__", None)
    if iface is not None:  # numpy arrays, elements and slices (strided: the span)
        addr = iface["data"][0]
        nbytes = getattr(obj, "nbytes", None)
        if nbytes is None or not getattr(obj, "flags", {"C_CONTIGUOUS": True})["C_CONTIGUOUS"]:
            raise InvalidBreakpoint("perfbp watches contiguous memory: watch a contiguous "
                                    "slice, or each element")
        return addr, length or nbytes
    try:
        view = memoryview(obj)
    except TypeError:
        raise InvalidBreakpoint(f"cannot watch a {type(obj).__name__}: give an address and a "
                                f"length, a ctypes object, or an object with the buffer "
                                f"protocol (bytearray, array.array, numpy array)") from None
    if not view.contiguous:
        raise InvalidBreakpoint("perfbp watches contiguous memory: this buffer is strided")
    ptr = abi.ffi.from_buffer(view)
    return int(abi.ffi.cast("uintptr_t", ptr)), length or view.nbytes


import os as _os
from dataclasses import dataclass

# perfbp/ itself (this file is in perfbp/run/): frames there are perfbp's own
_PACKAGE_DIR = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))) + _os.sep


@dataclass(frozen=True)
class HitEvent:
    """One hit, as a callback sees it.

    Attributes:
        watch: the :class:`WatchHandle`.
        address: the watched address (``bp_addr``: the piece that was hit).
        tid: the thread that made the access.
        old, new: the watched bytes before and after (for data watches).
        filename, line, function: the Python code that made the access:
            the line executing when the CPU trapped (None when the access
            was not made under a Python frame of this thread).
    """

    watch: "WatchHandle"
    address: int
    tid: int
    old: "bytes | None"
    new: "bytes | None"
    filename: "str | None"
    line: "int | None"
    function: "str | None"


class _Callbacks:
    """The process's SIGTRAP handler while any watch has a callback."""

    handles: "dict[int, WatchHandle]" = {}

    @classmethod
    def add(cls, handle: "WatchHandle") -> int:
        from ..kernel.events import TrapGuard

        TrapGuard.ensure()
        if TrapGuard._token is None:
            raise Unsupported("hit callbacks need perfbp's SIGTRAP handler, and this "
                              "program has a SIGTRAP handler of its own")
        TrapGuard.dispatch = cls._on_trap
        key = id(handle)
        cls.handles[key] = handle
        return key

    @classmethod
    def remove(cls, key: int) -> None:
        cls.handles.pop(key, None)

    @staticmethod
    def _on_trap(code: int, addr: int, data: int) -> None:
        # Runs inside the SIGTRAP, in the thread that made the access, before
        # it executes anything else: the calling Python frame is the one whose
        # current instruction made the access, so its line is exact.
        import sys

        handle = _Callbacks.handles.get(data)
        if code != abi.TRAP_PERF or handle is None:
            return
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            frame = frame.f_back  # perfbp's own trampoline frames
        new = handle._snapshot()
        old, handle._last = handle._last, new
        event = HitEvent(handle, addr, threading.get_native_id(), old, new,
                         frame.f_code.co_filename if frame else None,
                         frame.f_lineno if frame else None,
                         frame.f_code.co_name if frame else None)
        handle._callback_hits += 1
        handle._on_hit(event)


class WatchHandle:
    """A live watch on Python-visible memory (see :func:`watch`).

    Attributes:
        watch: the :class:`~perfbp.Watch` (its pieces, one per register):
            what is watched now (:meth:`move` keeps it current).
        hits: the exact hit count, on every range the watch has watched
            (readable after the watch is closed too).
    """

    def __init__(self, watch_: Watch, target: Target, on_hit=None, sample: bool = False) -> None:
        self.watch = watch_
        self.target = target
        self._sampler = None
        self._sampled: list = []
        self._final: "int | None" = None
        self._on_hit = on_hit
        self._key = None
        self._callback_hits = 0
        self._last = None
        self._carried = 0  # hits of counters a move closed
        self._tid = threading.get_native_id()  # the thread a callback watch watches
        # a label of the watch's own address is the default one: it follows a move
        self._auto_label = watch_.label.startswith(f"{watch_.address:#x}/")
        plan([watch_], target).require()
        self._counters: list[Counter] = []
        try:
            if on_hit is not None:
                self._key = _Callbacks.add(self)
                self._last = self._snapshot()
                opts = EventOptions(exclude_kernel=watch_.exclude_kernel, sigtrap=True,
                                    sig_data=self._key)
            else:
                opts = EventOptions(exclude_kernel=watch_.exclude_kernel)
            self._options = opts
            if sample:
                from ..kernel.sampling import Sampler

                self._sampler = Sampler(list(watch_.pieces), target,
                                        exclude_kernel=watch_.exclude_kernel)
            else:
                for bp in watch_.pieces:
                    self._counters.append(Counter(bp, target=target, options=opts))
        except InvalidBreakpoint as exc:
            self.close()
            if on_hit is not None and exc.errno == 22:
                import platform

                raise Unsupported(
                    f"hit callbacks need attr.sigtrap, which this kernel "
                    f"({platform.release()}) refuses: it arrived in Linux 5.13. Watch "
                    f"without on_hit (counts) or with sample=True (every hit, after "
                    f"the fact)") from None
            raise
        except BaseException:
            self.close()
            raise

    def samples(self):
        """Every hit so far as columns (numpy arrays: ``ip``, ``tid``, ``time``,
        ``cpu``, ``addr`` ...), for a watch made with ``sample=True``."""
        from ..kernel.records import SampleColumns

        if self._sampler is None and not self._sampled:
            raise InvalidBreakpoint("this watch does not sample: perfbp.watch(..., sample=True)")
        if self._sampler is not None:
            batch = self._sampler.read()
            if len(batch):
                self._sampled.append(batch.samples)
        return SampleColumns.concat(self._sampled)

    def _snapshot(self) -> "bytes | None":
        """The watched bytes now (data watches in this process only)."""
        if self.watch.access == "x" or self.target.kind != "thread":
            return None
        return ctypes.string_at(self.watch.address, self.watch.length)

    @property
    def hits(self) -> int:
        if self._final is not None:
            return self._final
        if self._sampler is not None:
            return sum(st.hits for st in self._sampler.stats())
        return self._carried + sum(c.read() for c in self._counters)

    def move(self, target: Any, length: "int | None" = None) -> None:
        """Point the watch at other memory: the next element of an array, or
        a wider or narrower range (``w.move(a[10:12])``).

        The new range is ``length`` bytes when given, else ``target``'s own
        size (a bare address keeps the watch's current length).  It is split
        over registers as :func:`watch` splits, and the watch's counters are
        re-planned: as many as the new range needs are kept and re-pointed in
        place (``PERF_EVENT_IOC_MODIFY_ATTRIBUTES``: their slots stay
        reserved), any more are planned with the slots this watch already
        holds counted as its own, then opened; any left over are closed.

        All-or-nothing: when it raises, the watch still watches exactly the
        old range, with the same counters.  :attr:`hits` keeps accumulating
        across moves (the watch's hits on every range it has watched; read it
        before a move for a per-range figure).  A label given to
        :func:`watch` stays; the default one (the address) follows the move.
        A callback watch moves too (its ``old`` bytes restart from the new
        range); a sampling watch does not.

        Raises:
            NoBreakpointSlots: the new range needs more registers than are
                free; nothing changed.
            InvalidBreakpoint: the target is not watchable memory, breaks an
                architecture rule, or the watch is closed; nothing changed.
            Unsupported: a sampling watch (``sample=True``).
        """
        if self._sampler is not None:
            raise Unsupported("a sampling watch cannot move: its samples belong to the "
                              "range it was opened on. Close it (.samples() stays "
                              "readable) and watch the new range")
        if self._final is not None:
            raise InvalidBreakpoint(f"this watch ({self.watch.label}) is closed: watch the "
                                    f"new memory with perfbp.watch()")
        old = self.watch
        if length is None and isinstance(target, int):
            length = old.length
        addr, n = address_of(target, length)
        new = Watch.range(addr, n, old.access, label="" if self._auto_label else old.label,
                          exclude_kernel=old.exclude_kernel)
        kept = self._counters[:len(new.pieces)]
        surplus = self._counters[len(new.pieces):]
        extra = self._open_extra(old, new)
        done = 0
        try:
            for c, bp in zip(kept, new.pieces):
                c.retarget(bp)
                done += 1
        except BaseException:
            # back to the old breakpoints, which the kernel took before
            for c, bp in zip(kept[:done], old.pieces):
                c.retarget(bp)
            for c in extra:
                c.close()
            raise
        for c in surplus:  # their hits stay in the watch's count
            self._carried += c.read()
            c.close()
        self._counters = kept + extra
        self.watch = new
        if self._key is not None:
            self._last = self._snapshot()

    def _open_extra(self, old: Watch, new: Watch) -> "list[Counter]":
        """The counters for the pieces of ``new`` beyond the ones the watch
        has: planned (the slots it holds stay its own), then opened
        all-or-nothing."""
        have = len(self._counters)
        if len(new.pieces) <= have:
            return []
        more = Watch(new.label, new.pieces[have:], new.exclude_kernel)
        target = self.target
        if target.kind == "thread" and target.pid == 0:
            target = Target.thread(self._tid)  # the watched thread, whoever moves it
        fit = plan([more], target)
        if not fit.fits:
            held = f" (perfbp's own watches hold {fit.capacity - fit.free}: " \
                   f"{'; '.join(fit.held_by_perfbp)})" if fit.held_by_perfbp else ""
            raise NoBreakpointSlots(
                f"cannot move {old.label} onto {new.spec}: it needs {len(new.pieces)} "
                f"debug registers ({'+'.join(str(p.length) for p in new.pieces)} bytes), "
                f"{len(more.pieces)} more than "
                f"the {have} it holds, and {fit.free} {'is' if fit.free == 1 else 'are'} "
                f"free in {fit.target}{held}. The watch still watches {old.spec}. Close "
                f"another watch, or move onto a shorter or better aligned range")
        extra: "list[Counter]" = []
        try:
            for bp in more.pieces:
                extra.append(Counter(bp, target=target, options=self._options))
        except BaseException:
            for c in extra:
                c.close()
            raise
        return extra

    def close(self) -> None:
        """Stop watching; :attr:`hits` keeps the final count."""
        if self._final is None and self._counters:
            self._final = self._carried + sum(c.read() for c in self._counters
                                              if not c.closed)
        if self._sampler is not None:
            self._sampler.disable()
            self.samples()  # keep every sample for after the close
            self._final = sum(st.hits for st in self._sampler.stats())
            self._sampler.close()
            self._sampler = None
        for c in self._counters:
            c.close()
        if self._key is not None:
            _Callbacks.remove(self._key)
            self._key = None

    def __enter__(self) -> "WatchHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._final is not None else "watching"
        return (f"<perfbp watch {self.watch.label} {self.watch.spec} on "
                f"{self.target.describe()}: {self.hits:,} hits, {state}>")


def watch(target: Any, access: str = "w", length: "int | None" = None, *,
          pid: "int | None" = None, label: str = "", on_hit=None,
          sample: bool = False) -> WatchHandle:
    """Watch memory and count every access, exactly.

    Args:
        target: an address (give ``length``), a ctypes object, or an object
            with the buffer protocol (bytearray, memoryview, array.array, a
            numpy array, an element or contiguous slice of one).
        access: ``"w"`` (writes), ``"rw"`` (reads and writes), ``"x"``.
        length: bytes to watch (default: the object's size).
        pid: another process (an address in it); default: this whole
            process, every thread.
        label: how outputs name it.
        on_hit: ``fn(event)`` called for every hit, synchronously, in the
            calling thread, with a :class:`HitEvent` (old and new bytes, and
            the Python file, line and function that made the access).  Uses
            ``attr.sigtrap`` (Linux 5.13+): the watch is then on the calling
            thread only.  See docs/api.md for what is and is not attributable.
        sample: also record every hit as a sample (:meth:`WatchHandle.samples`).

    Example::

        a = numpy.zeros(16)
        with perfbp.watch(a[3:4]) as w:
            a[3] = 1.0
        print(w.hits)   # 1

    Raises:
        InvalidBreakpoint, NoBreakpointSlots, PermissionDenied: as for
        :class:`~perfbp.Counter`; nothing is left open.
    """
    import os

    addr, n = address_of(target, length)
    w = Watch.range(addr, n, access, label=label or f"{addr:#x}/{n}:{access}")
    if on_hit is not None:
        if pid is not None:
            raise InvalidBreakpoint("hit callbacks run in the thread that made the access: "
                                    "they watch this thread only, not another process")
        return WatchHandle(w, Target.this_thread(), on_hit)
    tgt = Target.process(pid if pid is not None else os.getpid())
    return WatchHandle(w, tgt, sample=sample)
