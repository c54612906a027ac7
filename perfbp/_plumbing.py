"""What the command line needs beyond the public API: launch status, CPU
lists, process checks, the report's sort keys, the self-check, watch-spec
parsing and symbol lookup in a file.

Internal: the user interfaces (``perfbp.cli``, ``perfbp.cli.tui``) may import
it (tests/test_layers.py allows them this one path besides the front); it
is not part of the API and may change.
"""

from .run.check import CheckItem, CheckReport, run_checks
from .kernel.launch import exit_status, resolve_command
from .data.report import SORT_KEYS
from .symbols.resolve import resolve_in_file
from .planning.spec import WatchSpec
from .planning.spec import parse as parse_watch
from .kernel.system import online_cpus, parse_cpu_list, possible_cpus, process_exists

__all__ = ["CheckItem", "CheckReport", "SORT_KEYS", "WatchSpec", "exit_status",
           "online_cpus", "parse_cpu_list", "parse_watch", "possible_cpus",
           "process_exists", "resolve_command", "resolve_in_file", "run_checks"]
