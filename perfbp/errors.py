"""perfbp's one error hierarchy.

Every error perfbp raises on purpose is a :class:`PerfbpError`, which is also an
:class:`OSError` carrying the errno the kernel would give (or gave).  Each
message says what was asked, why it cannot be done, and what to do instead.

What to do is said in the words of the caller's front: ``str(err)`` names the
Python API's arguments (``multiplex=``, ``command=[...]``), and the command
line prints :meth:`PerfbpError.message_for` ``("cli")``, which names its options
(``--multiplex``, ``-- CMD``).  A message written as a template names each
option once, as ``{multiplex}`` (:data:`TERMS`), and :meth:`PerfbpError.phrased`
builds the error from it.

This module is pure data: it imports nothing from perfbp.
"""

from __future__ import annotations

import errno as _errno
from typing import Any

#: What a message may tell the user to give, as each front spells it:
#: ``(the Python API, the command line)``.
TERMS = {
    "multiplex": ("multiplex=SECONDS (count, record, LiveSession: the length of a turn)",
                  "--multiplex"),
    "command": ("command=[PROGRAM, ARGS...]", "-- CMD"),
    "process": ("target=Target.process(PID)", "-p PID"),
    "thread": ("target=Target.thread(TID)", "-t TID"),
    "cpus": ("target=Target.cpus(...)", "-a or -C"),
    "address": ("its address (Watch.range(ADDR, LEN))", "its address (-w ADDR/LEN)"),
    "no_trace": ("trace=False", "--no-ptrace"),
    "probe": ("perfbp.probe()", "`perfbp slots --probe`"),
    "call_graph": ("callchain=", "--call-graph "),
}
FRONTS = ("api", "cli")
_TERM = r"\{(" + "|".join(TERMS) + r")\}"  # compiled on first use (re's cache)


def phrase(template: str, front: str = "api") -> str:
    """``template`` with each ``{term}`` of :data:`TERMS` in ``front``'s
    words (``"api"`` or ``"cli"``); any other text is left as it is."""
    import re

    i = FRONTS.index(front)
    return re.sub(_TERM, lambda m: TERMS[m.group(1)][i], template)


class PerfbpError(OSError):
    """Base class of every perfbp error.

    Attributes:
        errno: the errno the kernel gave or would give.
        message: the full, human-readable explanation (also ``str(err)``).
        context: extra facts (pid, address, ...) for programs that catch it.
    """

    default_errno: int = _errno.EIO
    _template: "str | None" = None

    def __init__(self, message: str, *, errno: int | None = None, **context: Any) -> None:
        code = self.default_errno if errno is None else errno
        super().__init__(code, message)
        self.message = message
        self.context = context

    @classmethod
    def phrased(cls, template: str, **kwargs: Any) -> "PerfbpError":
        """The error whose message is ``template`` (see :func:`phrase`):
        ``str()`` speaks the API's words, :meth:`message_for` any front's."""
        err = cls(phrase(template), **kwargs)
        err._template = template
        return err

    def message_for(self, front: str) -> str:
        """The message in ``front``'s words: ``"api"`` (``str(err)``) or
        ``"cli"`` (the options of the ``perfbp`` command)."""
        return self.message if self._template is None else phrase(self._template, front)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep pickling (multiprocessing) working
        return (_rebuild, (type(self), self.message, self.errno, self.context, self._template))


def _rebuild(cls, message, code, context, template=None):
    err = cls(message, errno=code, **context)
    err._template = template
    return err


class NoBreakpointSlots(PerfbpError):
    """The debug-register slots are all taken (ENOSPC).

    x86 has 4 slots per thread and per CPU, shared by data and execute
    breakpoints; gdb's and perf's watchpoints take them too.
    """

    default_errno = _errno.ENOSPC


class PermissionDenied(PerfbpError):
    """The kernel refused for lack of privilege (EACCES or EPERM)."""

    default_errno = _errno.EACCES


class InvalidBreakpoint(PerfbpError):
    """The breakpoint breaks an architecture rule or bad input (EINVAL)."""

    default_errno = _errno.EINVAL


class InvalidCondition(InvalidBreakpoint):
    """A condition on a watch's value (``new == 0``) that cannot be read or
    cannot apply to the watch (EINVAL).

    The message is one line; :meth:`caret` gives the condition with a caret
    under the problem, for a terminal.

    Attributes:
        text: the condition as written.
        column: where the problem is in ``text`` (0-based).
    """

    def __init__(self, message: str, *, text: str = "", column: int = 0, **context: Any) -> None:
        super().__init__(message, text=text, column=column, **context)
        self.text = text
        self.column = column

    def caret(self) -> str:
        """Two lines: the condition, and a ``^`` under the problem."""
        return f"  {self.text}\n  {' ' * self.column}^"


class NoSuchProcess(PerfbpError):
    """The target process or thread does not exist (ESRCH)."""

    default_errno = _errno.ESRCH


class Unsupported(PerfbpError):
    """The kernel or machine lacks what is needed (EOPNOTSUPP or ENOENT)."""

    default_errno = _errno.EOPNOTSUPP


class CommandNotFound(PerfbpError):
    """The command to launch does not exist or cannot be executed (ENOENT)."""

    default_errno = _errno.ENOENT


class SymbolNotFound(PerfbpError):
    """A symbol named in a watch does not exist (or is ambiguous) (ENOENT)."""

    default_errno = _errno.ENOENT


class CorruptRecord(PerfbpError):
    """A record is truncated or inconsistent with its header (EBADMSG).

    Raised by the record decoder; :class:`CorruptRecording` is what a reader
    of a whole file meets."""

    default_errno = _errno.EBADMSG


class CorruptRecording(PerfbpError):
    """A recording file that is not perf.data, or is damaged (EBADMSG)."""

    default_errno = _errno.EBADMSG


class RingOverrun(PerfbpError):
    """The ring's head moved more than a whole buffer past the tail (EIO): a
    protocol violation (the kernel never does this while the tail is
    written)."""
