"""``tests/tiny_cli.py``'s command in real processes that skip the seconds of imports.

A fresh ``python tests/tiny_cli.py ...`` spends most of a short run importing torch and
Lightning. The processes started here are forked from a server (``multiprocessing``'s
forkserver) that imported ``tiny_cli`` once, and nothing else ran in it: each child starts as
a fresh ``python tests/tiny_cli.py`` would after its imports. It is a process of its own, so
what lives in a real process is real: SIGKILL and SIGTERM, exit statuses, file size limits
(``RLIMIT_FSIZE``), file locks and runs started together. Several processes (``--trainer.devices
2``) work too: Lightning starts the other ranks as ``python tests/tiny_cli.py ...`` from the
child's ``sys.argv``.

What a fresh interpreter does while it imports (Ctrl+C while starting) needs ``subprocess``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import resource
import runpy
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TINY_CLI = str(TESTS / "tiny_cli.py")

_context: Optional[multiprocessing.context.ForkServerContext] = None


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, its server started (once per test process) with tiny_cli loaded."""
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["tiny_cli", "fault_injection"])
        # Python 3.11's forkserver ignores the parent's sys.path when it preloads: PYTHONPATH
        # lets it find tiny_cli. The children get the caller's environment back (_enter).
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS)])
        folder = os.getcwd()
        try:
            os.chdir(REPO)  # not a test's temporary folder: the server outlives the test
            multiprocessing.forkserver.ensure_running()
        finally:
            os.chdir(folder)
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
        _context = context
    return _context


def _enter(cwd: str, environment: dict[str, str],
           stderr: multiprocessing.connection.Connection,
           limit_file_bytes: Optional[int]) -> None:
    """In the forked process: the caller's environment, folder, stderr pipe and size limit."""
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    # stderr goes to the caller's pipe (a pipe, as with capture_output: no file size limit).
    os.dup2(stderr.fileno(), 2)
    stderr.close()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    if limit_file_bytes is not None:  # a full disk, for files larger than this
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))


def _child(args: list[str], cwd: str, environment: dict[str, str],
           stderr: multiprocessing.connection.Connection,
           limit_file_bytes: Optional[int]) -> None:
    """In the forked process: what ``python tests/tiny_cli.py ARGS`` does after its imports."""
    _enter(cwd, environment, stderr, limit_file_bytes)
    sys.argv = [TINY_CLI, *args]
    from cli import run

    run()


def _script_child(script: str, cwd: str, environment: dict[str, str],
                  stderr: multiprocessing.connection.Connection, path: list[str]) -> None:
    """In the forked process: ``python SCRIPT`` with ``path`` first on ``sys.path``."""
    _enter(cwd, environment, stderr, None)
    sys.path[:0] = [str(Path(script).parent), *path]  # the script's folder, then PYTHONPATH
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")


class CliProcess:
    """A started ``tiny_cli.py`` process, with ``subprocess.Popen``'s few methods the tests use.

    Args:
        args: The command line after ``tiny_cli.py``.
        cwd: The process's working folder.
        limit_file_bytes: When given, files larger than this cannot be written (a full disk).
        script: Instead of ``tiny_cli.py ARGS``, the Python file to run as ``__main__``.
        path: Folders put first on ``sys.path`` (after the script's), as PYTHONPATH would.
        env: The process's environment (the caller's by default).
    """

    def __init__(self, args: Sequence[str], cwd: Path | str,
                 limit_file_bytes: Optional[int] = None, *,
                 script: Optional[Path] = None, path: Sequence[Path] = (),
                 env: Optional[dict[str, str]] = None) -> None:
        context = _forkserver()
        read_fd, write_fd = os.pipe()
        # A Connection, so that the pipe's end travels to the forked child with the arguments.
        write_end = multiprocessing.connection.Connection(write_fd, readable=False)
        environment = dict(os.environ if env is None else env)
        if script is None:
            self.args = [TINY_CLI, *args]
            self._process = context.Process(target=_child, args=(
                list(args), str(cwd), environment, write_end, limit_file_bytes))
        else:
            self.args = [str(script)]
            self._process = context.Process(target=_script_child, args=(
                str(script), str(cwd), environment, write_end, [str(p) for p in path]))
        self._process.start()
        write_end.close()  # the child's copy is the only writer left: EOF when it ends
        self._stderr = bytearray()
        self._reader = threading.Thread(target=self._drain, args=(read_fd,), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _drain(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb") as stream:
            for chunk in iter(lambda: stream.read1(65536), b""):
                self._stderr += chunk

    @property
    def returncode(self) -> Optional[int]:
        """The exit status; minus the signal's number for a killed process (as ``Popen``)."""
        return self._process.exitcode

    def poll(self) -> Optional[int]:
        return self.returncode

    def send_signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the process to end; ``subprocess.TimeoutExpired`` after ``timeout`` s."""
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        self._reader.join()  # until every process that holds the pipe (other ranks) is gone
        return self._process.exitcode

    @property
    def stderr(self) -> str:
        """What the process (and the processes it started) wrote on stderr, once ended."""
        return self._stderr.decode("utf-8", "replace")

    def kill(self) -> None:
        self._process.kill()


def run(args: Sequence[str], cwd: Path | str, limit_file_bytes: Optional[int] = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """``subprocess.run([python, tiny_cli.py, *args], capture_output=True, text=True)``, forked.

    Args:
        args: The command line after ``tiny_cli.py``.
        cwd: The process's working folder.
        limit_file_bytes: When given, files larger than this cannot be written (a full disk).
        timeout: Seconds to wait; the process is killed after them.
    """
    process = CliProcess(args, cwd, limit_file_bytes)
    try:
        status = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, status, "", process.stderr)


def run_script(script: Path, cwd: Path | str, path: Sequence[Path] = (),
               env: Optional[dict[str, str]] = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """``subprocess.run([python, script], env=env)`` with ``path`` as PYTHONPATH, forked.

    Args:
        script: The Python file to run as ``__main__``.
        cwd: The process's working folder.
        path: Folders put first on ``sys.path`` (after the script's), as PYTHONPATH would.
        env: The process's environment (the caller's by default).
        timeout: Seconds to wait; the process is killed after them.
    """
    process = CliProcess((), cwd, script=script, path=path, env=env)
    try:
        status = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, status, "", process.stderr)
