"""The public API's contract: the names perfbp exports, grouped as psutil
groups them, each one reachable, and ``import perfbp`` light (names are
imported when first used)."""

from __future__ import annotations

import errno
import subprocess
import sys

import perfbp

EXCEPTIONS = ["PerfbpError", "NoBreakpointSlots", "PermissionDenied", "InvalidBreakpoint",
              "NoSuchProcess", "Unsupported", "CommandNotFound", "SymbolNotFound",
              "CorruptRecording"]
CLASSES = ["Breakpoint", "Watch", "Target", "Plan", "Counter", "Group", "Sampler",
           "WatchHandle", "LiveSession"]
FUNCTIONS = ["watch", "count", "record", "plan", "probe", "resolve_watches", "load_report",
             "load_samples"]


def test_the_public_names():
    assert perfbp.__all__ == [*EXCEPTIONS, "__version__", *CLASSES, *FUNCTIONS]
    assert len(perfbp.__all__) <= 27


def test_every_public_name_is_reachable_and_listed():
    for name in perfbp.__all__:
        assert getattr(perfbp, name) is not None, name
        assert name in dir(perfbp)
    for name in CLASSES:
        assert isinstance(getattr(perfbp, name), type), name
    for name in FUNCTIONS:
        assert callable(getattr(perfbp, name)), name
    assert perfbp.__version__.count(".") == 2


def test_exceptions_are_oserrors_with_the_kernels_errno():
    expected = {"NoBreakpointSlots": errno.ENOSPC, "PermissionDenied": errno.EACCES,
                "InvalidBreakpoint": errno.EINVAL, "NoSuchProcess": errno.ESRCH,
                "CommandNotFound": errno.ENOENT, "SymbolNotFound": errno.ENOENT,
                "CorruptRecording": errno.EBADMSG}
    for name in EXCEPTIONS:
        cls = getattr(perfbp, name)
        assert issubclass(cls, perfbp.PerfbpError) and issubclass(cls, OSError), name
        if name in expected:
            assert cls("x").errno == expected[name], name


def test_an_unknown_name_is_an_attribute_error():
    try:
        perfbp.online_cpus  # plumbing: reached through its module, not the front
    except AttributeError as exc:
        assert "online_cpus" in str(exc)
    else:
        raise AssertionError("perfbp.online_cpus is not public")


def test_import_perfbp_is_light():
    """Importing the package loads neither the kernel layer (cffi) nor numpy:
    a name's module is imported when the name is first used."""
    code = ("import sys, perfbp; "
            "print(sorted(m for m in ('perfbp.kernel.abi', 'cffi', 'numpy', 'perfbp.kernel.counter') "
            "if m in sys.modules)); perfbp.Counter; "
            "print('perfbp.kernel.counter' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"], out
