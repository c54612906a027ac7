"""Facts about this machine and its processes, read from /proc and /sys.

Pure Python over text files; no perf syscalls.  Everything here answers a
question the layers above ask before or after opening events: which threads a
process has, which CPUs exist, how paranoid the kernel is, which capabilities
this process holds.
"""

from __future__ import annotations

import os

#: Capability numbers from ``include/uapi/linux/capability.h``.
CAP_KILL = 5
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

CAP_NAMES = {CAP_KILL: "CAP_KILL", CAP_SYS_PTRACE: "CAP_SYS_PTRACE",
             CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}


def open_regular(path: str):
    """Open ``path`` for reading in binary, only if it is a regular file:
    a FIFO, a device or a directory is refused at once (it is opened
    non-blocking, so a FIFO with no writer cannot hang the caller).

    Raises:
        OSError: it cannot be opened, or (EINVAL) it is not a regular file.
    """
    import errno as _errno
    import stat as _stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not _stat.S_ISREG(mode):
            kind = ("a FIFO" if _stat.S_ISFIFO(mode) else "a directory" if _stat.S_ISDIR(mode)
                    else "a device" if _stat.S_ISCHR(mode) or _stat.S_ISBLK(mode)
                    else "a socket" if _stat.S_ISSOCK(mode) else "not a regular file")
            raise OSError(_errno.EINVAL, f"{kind}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


#: more CPUs than any kernel supports (NR_CPUS is at most 8192): a list
#: that names one is refused before it is expanded
MAX_CPU = 1 << 16


def parse_cpu_list(text: str) -> list[int]:
    """Parse the kernel's CPU-list format (``0-3,8,10-11``) into numbers.

    Raises:
        ValueError: on anything that is not a CPU list, or names a CPU
            number no kernel has (checked before any range is expanded).
    """
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            if len(lo) > 6 or len(hi) > 6:
                raise ValueError(f"bad CPU range {part[:20]!r}")
            a, b = int(lo), int(hi)
            if a > b or a < 0 or b >= MAX_CPU:
                raise ValueError(f"bad CPU range {part!r}")
            cpus.extend(range(a, b + 1))
        else:
            if len(part) > 6:
                raise ValueError(f"bad CPU number {part[:20]!r}")
            n = int(part)
            if n < 0 or n >= MAX_CPU:
                raise ValueError(f"bad CPU number {part!r}")
            cpus.append(n)
    return sorted(set(cpus))


def _cpu_file(name: str) -> list[int]:
    try:
        with open(f"/sys/devices/system/cpu/{name}") as f:
            return parse_cpu_list(f.read())
    except OSError:
        return list(range(os.cpu_count() or 1))


def online_cpus() -> list[int]:
    """CPUs that are online now (``/sys/devices/system/cpu/online``)."""
    return _cpu_file("online")


def possible_cpus() -> list[int]:
    """CPUs that may ever exist (``/sys/devices/system/cpu/possible``): the set
    the kernel's slot accounting iterates over."""
    return _cpu_file("possible")


def perf_event_paranoid() -> int | None:
    """``/proc/sys/kernel/perf_event_paranoid``, or None when unreadable."""
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def effective_capabilities(pid: int | str = "self") -> int:
    """The ``CapEff`` bit mask of a process (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/status", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def has_capability(cap: int, pid: int | str = "self") -> bool:
    return bool(effective_capabilities(pid) >> cap & 1)


def thread_ids(pid: int) -> list[int]:
    """The thread ids of process ``pid`` (``/proc/PID/task``).

    Raises:
        ProcessLookupError: when the process does not exist.
    """
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessLookupError(3, f"no process {pid}") from None


def process_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def status_field(tid: int, name: str) -> "int | None":
    """A number from a task's status (``Tgid``, ``PPid``, ``TracerPid``),
    or None when the task is gone or has no such field."""
    try:
        # a thread's name may hold any byte (prctl PR_SET_NAME): not UTF-8
        with open(f"/proc/{tid}/status", errors="replace") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def thread_group(tid: int) -> int | None:
    """The process (thread-group) id a thread belongs to, or None."""
    return status_field(tid, "Tgid")


def process_owner(pid: int) -> "int | None":
    """The user id that owns process ``pid`` (its /proc directory), or None
    when it does not exist."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def user_name(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` for a user with no name."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def why_not_yours(pid: int) -> str:
    """Why this user may not look into process ``pid``, in words: whose it
    is, or, when it is this user's own, that it is not dumpable (the kernel
    then refuses ptrace-read access, which perf events and /proc need)."""
    owner = process_owner(pid)
    me = os.geteuid()
    if owner is None:
        return f"process {pid} does not exist (or has exited)"
    if owner != me:
        return (f"process {pid} ({comm(pid)}) belongs to {user_name(owner)}, not to you, "
                f"{user_name(me)}: watching it needs ptrace rights over it "
                f"(CAP_SYS_PTRACE, or being that user)")
    return (f"process {pid} ({comm(pid)}) is yours but not dumpable (a set-user-ID or "
            f"file-capability program, or one that called prctl(PR_SET_DUMPABLE, 0)): "
            f"the kernel denies ptrace-read access to it, which watching needs")


def comm(pid: int) -> str:
    """The command name of a task (``/proc/PID/comm``), or ``?``."""
    try:
        with open(f"/proc/{pid}/comm", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def breakpoint_pmu_type() -> int | None:
    """The ``type`` of the breakpoint PMU (5), or None when it is absent."""
    try:
        with open("/sys/bus/event_source/devices/breakpoint/type") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def kernel_release() -> str:
    return os.uname().release


def kernel_config(option: str) -> "str | None":
    """The value of a kernel build option (``y``, ``m``, a string) from
    /proc/config.gz, ``"n"`` when the kernel lists it as not set, or None
    when the configuration is not available."""
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith(option + "="):
                    return line.split("=", 1)[1].strip()
                if line.startswith(f"# {option} is not set"):
                    return "n"
    except OSError:
        return None
    return "n"
