"""perfbp: hardware watchpoints on Linux, from Python.

Count (and, later, sample) every access to a memory location, using the
kernel's perf_event breakpoints: the same debug registers gdb's ``watch`` uses,
without stopping the program.

    >>> import perfbp
    >>> bp = perfbp.Breakpoint.write(address, 8)
    >>> with perfbp.Counter(bp, pid=1234, process=True) as c:
    ...     time.sleep(1)
    ...     print(c.read(), "writes")
"""

from .breakpoint import Breakpoint
from .counter import Counter, Group
from .errors import (
    InvalidBreakpoint,
    NoBreakpointSlots,
    NoSuchProcess,
    PerfbpError,
    PermissionDenied,
    Unsupported,
)
from .check import CheckItem, CheckReport, probe_capacity, run_checks
from .errors import CommandNotFound, CorruptRecording, SymbolNotFound
from .events import EventOptions, Target
from .launch import exit_status, resolve_command
from .frames import Samples, load_samples
from .live import LiveSession, LiveWatch
from .watch import HitEvent, WatchHandle, address_of, watch

from .planner import Plan, Watch, plan, probe
from .regions import split_range
from .resolve import resolve as resolve_watches
from .resolve import resolve_in_file
from .slots import SlotModel
from .recording import RecordResult, record
from .records import SampleColumns
from .report import SORT_KEYS, Report, WatchReport, load_report
from .sampling import Batch, Sampler, WatchStats
from .results import CountResult, WatchHits
from .session import count
from .spec import WatchSpec
from .spec import parse as parse_watch
from .system import online_cpus, parse_cpu_list, possible_cpus, process_exists

from ._version import __version__

__all__ = [
    "__version__",
    "Breakpoint",
    "Counter",
    "Group",
    "Target",
    "EventOptions",
    "PerfbpError",
    "NoBreakpointSlots",
    "PermissionDenied",
    "InvalidBreakpoint",
    "NoSuchProcess",
    "Unsupported",
    "CommandNotFound",
    "SymbolNotFound",
    "WatchSpec",
    "parse_watch",
    "count",
    "record",
    "LiveSession",
    "Samples",
    "load_samples",
    "watch",
    "WatchHandle",
    "HitEvent",
    "address_of",
    "LiveWatch",
    "Watch",
    "Plan",
    "plan",
    "probe",
    "split_range",
    "resolve_watches",
    "resolve_in_file",
    "SlotModel",
    "RecordResult",
    "load_report",
    "Report",
    "WatchReport",
    "SORT_KEYS",
    "CorruptRecording",
    "Sampler",
    "Batch",
    "WatchStats",
    "SampleColumns",
    "CountResult",
    "WatchHits",
    "run_checks",
    "CheckReport",
    "CheckItem",
    "probe_capacity",
    "exit_status",
    "resolve_command",
    "online_cpus",
    "possible_cpus",
    "parse_cpu_list",
    "process_exists",
]
