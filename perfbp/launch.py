"""Starting a command with its watches armed before its first instruction.

:func:`prepare` forks a child that waits, before ``execve``, until perfbp has
opened its events on it; the events are opened disabled with
``enable_on_exec`` and ``inherit``, so the kernel switches them on inside
``execve`` itself: the command's very first user-space instruction is already
watched, and (with kernel-mode hits excluded) the ELF loader's clearing of
``.bss`` is not counted.  :meth:`Child.start` lets it exec, and reports a
command that could not be executed as a perfbp error.

The command is run directly with ``execve``, never through a shell.
"""

from __future__ import annotations

import errno as E
import os
import shutil
import signal

from .errors import CommandNotFound


def resolve_command(argv: "list[str]") -> str:
    """The path ``argv[0]`` would execute, looked up in ``$PATH`` like a shell.

    Raises:
        CommandNotFound: with the reason and what to do.
    """
    if not argv:
        raise CommandNotFound("no command given after --: write the program to "
                              "run, for example `-- ./myprog arg`")
    name = argv[0]
    if "/" in name:
        path = name
        if not os.path.exists(path):
            raise CommandNotFound(f"command '{name}' does not exist: check the path")
    else:
        found = shutil.which(name)
        if found is None:
            raise CommandNotFound(f"command '{name}' not found in $PATH: give its "
                                  f"path (./{name}) or install it")
        path = found
    if os.path.isdir(path):
        raise CommandNotFound(f"command '{name}' is a directory, not a program",
                              errno=E.EISDIR)
    if not os.access(path, os.X_OK):
        raise CommandNotFound(f"command '{name}' is not executable: chmod +x {path}",
                              errno=E.EACCES)
    return path


class Child:
    """A forked child stopped before ``execve``.

    Attributes:
        pid: its process id (events can be opened on it now).
        argv: the command line.
    """

    def __init__(self, argv: "list[str]", path: str, env: "dict[str, str] | None",
                 trace: bool = False) -> None:
        from . import abi

        self.argv = list(argv)
        self.path = path
        self.traced = trace
        go_r, go_w = os.pipe()
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the child: no imports, no locks, only system calls
            try:
                os.close(go_w)
                os.close(err_r)
                for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(sig, signal.SIG_DFL)
                if os.read(go_r, 1) != b"g":
                    os._exit(127)
                os.close(go_r)
                if trace:  # stop right after exec, for perfbp to resolve symbols
                    abi.ptrace(abi.PTRACE_TRACEME)
                os.execve(path, self.argv, os.environ if env is None else env)
            except OSError as exc:
                try:
                    os.write(err_w, str(exc.errno).encode())
                finally:
                    os._exit(127)
            except BaseException:
                os._exit(127)
            os._exit(127)
        os.close(go_r)
        os.close(err_w)
        self.pid = pid
        self._go = go_w
        self._err = err_r
        self.returncode: "int | None" = None

    def start(self) -> None:
        """Let the child exec the command.

        Raises:
            CommandNotFound: the exec failed (the reason from its errno).
        """
        os.write(self._go, b"g")
        os.close(self._go)
        self._go = -1
        data = os.read(self._err, 64)
        os.close(self._err)
        self._err = -1
        if not data and self.traced:
            # the exec succeeded: wait for the stop it causes under ptrace
            _, status = os.waitpid(self.pid, 0)
            if not os.WIFSTOPPED(status):
                self.returncode = os.waitstatus_to_exitcode(status)
                raise CommandNotFound(f"'{self.argv[0]}' ended before it could be watched",
                                      errno=E.ECHILD)
        if data:
            code = int(data)
            self.wait()
            raise CommandNotFound(
                f"cannot run '{self.argv[0]}': {os.strerror(code)} "
                f"(is it a program for this machine, with its interpreter installed?)",
                errno=code)

    def run_to_entry(self) -> None:
        """Run a traced child, stopped after exec, to its entry point (AT_ENTRY):
        the dynamic loader has then mapped every library, and no constructor
        and no ``main`` has run.  An ``int3`` is planted there and removed.

        Raises:
            PerfbpError: the machine is not x86-64, or the child did not stop there.
        """
        import struct as _struct

        from . import abi
        from .errors import PerfbpError, Unsupported

        if abi.MACHINE != "x86_64":
            raise Unsupported("waiting for a program's libraries (SYMBOL@LIB with -- CMD) "
                              "is implemented for x86-64 only; attach with -p instead")
        with open(f"/proc/{self.pid}/auxv", "rb") as f:
            auxv = f.read()
        entry = None
        for i in range(0, len(auxv) - 15, 16):
            key, value = _struct.unpack_from("<QQ", auxv, i)
            if key == 9:  # AT_ENTRY
                entry = value
                break
        if entry is None:
            raise PerfbpError(f"cannot find the entry point of {self.argv[0]}")
        word = abi.ptrace_peek(self.pid, entry)
        abi.ptrace(abi.PTRACE_POKETEXT, self.pid, entry, (word & ~0xFF) | 0xCC)
        abi.ptrace(abi.PTRACE_CONT, self.pid, 0, 0)
        while True:
            _, status = os.waitpid(self.pid, 0)
            if os.WIFSTOPPED(status) and os.WSTOPSIG(status) != signal.SIGTRAP:
                # another signal on the way to the entry point: deliver it
                abi.ptrace(abi.PTRACE_CONT, self.pid, 0, os.WSTOPSIG(status))
                continue
            break
        if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP):
            if not os.WIFSTOPPED(status):
                self.returncode = os.waitstatus_to_exitcode(status)
            raise PerfbpError(f"'{self.argv[0]}' did not reach its entry point "
                              f"(status {status:#x})")
        abi.ptrace(abi.PTRACE_POKETEXT, self.pid, entry, word)
        regs = abi.ptrace_regs(self.pid)
        regs[abi.USER_REGS_RIP] = entry  # back over the int3
        abi.ptrace_regs(self.pid, regs)

    def resume(self) -> None:
        """Let a traced child (stopped after exec) run on, untraced."""
        from . import abi

        if self.traced:
            abi.ptrace(abi.PTRACE_DETACH, self.pid, 0, 0)
            self.traced = False

    def kill(self) -> None:
        """End a started child (stopped or running) and reap it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait()

    def abort(self) -> None:
        """Make the child exit without running the command, and reap it."""
        if self._go >= 0:
            os.close(self._go)
            self._go = -1
        if self._err >= 0:
            os.close(self._err)
            self._err = -1
        self.wait()

    def poll(self) -> "int | None":
        """The exit status if the child has ended (see :meth:`wait`), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        """Wait for the child; return its exit code, or ``-SIGNAL`` when killed
        (the convention of :mod:`subprocess`)."""
        while self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.returncode = 0
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def prepare(argv: "list[str]", env: "dict[str, str] | None" = None,
            trace: bool = False) -> Child:
    """Fork ``argv`` stopped before exec; open events on ``child.pid``, then
    call ``child.start()`` (or ``child.abort()`` if opening failed).

    Raises:
        CommandNotFound: the command does not exist or is not executable.
    """
    path = resolve_command(argv)
    return Child(argv, path, env, trace)


def exit_status(returncode: int) -> int:
    """The shell's exit status for a child's return code: the code itself, or
    128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode
