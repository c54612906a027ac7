"""Starting a command with its watches armed before its first instruction.

:func:`fork_before_exec` forks a child that waits, before ``execve``, until
perfbp has opened its events on it; the events are opened disabled with
``enable_on_exec`` and ``inherit``, so the kernel switches them on inside
``execve`` itself: the command's very first user-space instruction is already
watched, and (with kernel-mode hits excluded) the ELF loader's clearing of
``.bss`` is not counted.  :mod:`perfbp.run.follow` traces the child from there.

The command is run directly with ``execve``, never through a shell.
"""

from __future__ import annotations

import errno as E
import os
import shutil
import signal

from ..errors import CommandNotFound

PR_SET_PDEATHSIG = 1


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


def fork_before_exec(path: str, argv: "list[str]", env: "dict[str, str] | None"
                     ) -> "tuple[int, int, int]":
    """Fork a child that waits, before ``execve``, for perfbp to open its
    events on it.

    Returns:
        ``(pid, go, err)``: write ``b"g"`` to ``go`` (and close it) to let the
        child exec, anything else to make it exit 127; ``err`` then reads
        the errno of a failed exec (nothing, and end of file, when the exec
        succeeded: the pipe is close-on-exec).
    """
    import ctypes

    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    environ = os.environ if env is None else env
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: no imports, no locks, only system calls
        try:
            # the command must not outlive perfbp: killed when the thread that
            # forked it ends (and if that happened already, before this call)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(127)
            os.close(go_w)
            os.close(err_r)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            if os.read(go_r, 1) != b"g":
                os._exit(127)
            os.close(go_r)
            os.execve(path, argv, environ)
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
    return pid, go_w, err_r


def exec_failed(argv: "list[str]", data: bytes) -> CommandNotFound:
    """The error for a child whose exec failed with the errno in ``data``."""
    code = int(data)
    return CommandNotFound(f"cannot run '{argv[0]}': {os.strerror(code)} "
                           f"(is it a program for this machine, with its interpreter "
                           f"installed?)", errno=code)


def exit_status(returncode: int) -> int:
    """The shell's exit status for a child's return code: the code itself, or
    128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode
