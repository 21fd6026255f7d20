"""A fork server for local workers: one warm interpreter per client process forks them.

Starting a worker as a fresh interpreter costs the interpreter's start and the runtime's
imports (tens of milliseconds), which made a new executor's first result several times
slower than a new ``ProcessPoolExecutor``'s (which forks the client). The fork server is a
fresh interpreter, started once per client process (and per environment), that imports the
worker's modules and then forks each worker on request: a worker is still a clean
interpreter that shares nothing with the client, but starts in a millisecond or two.

A pool starts the server when it is created, and asks it for workers without waiting: the
request (with the worker's pipes) waits in the control socket while the server starts, and
the calls written to a worker's stdin wait in its pipe, so the first executor of a process
waits for the server's start only once, overlapped with everything the client does to
prepare its first calls. A worker killed before its fork is reported is killed when it is.

The server runs in its own session (so a Ctrl-C at the terminal does not reach it) and exits
when the client's end of its control socket closes and its last worker has exited. Each
worker it forks leads its own process group, set by both sides of the fork before the
client learns the worker's pid, so ``killpg(pid)`` always reaches it.

The server's own code is ``wrencore_local.forkserver``, which imports only what it and a
worker need. Control messages are pickles over a ``SOCK_SEQPACKET`` socket pair:
  client -> server: ``(env, cwd)`` with the worker's stdin and stdout pipe ends attached;
  server -> client: ``("started", pid)`` in reply, and ``("exited", pid, returncode)``
  when a worker ends (``returncode`` as :attr:`subprocess.Popen.returncode` gives it).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import threading
from typing import Any, Dict, List, Optional, Tuple

from .forkserver import MAX_MESSAGE

logger = logging.getLogger(__name__)

#: What the server process runs (its control socket's descriptor is its one argument). The
#: cyclic collector is off until its imports are done (see ``wrencore_local.forkserver``).
SERVER_CODE = "import gc; gc.disable(); from wrencore_local.forkserver import serve; serve()"
#: Whether this platform can run a fork server (POSIX with descriptor passing).
SUPPORTED = (hasattr(os, "fork") and hasattr(socket, "send_fds")
             and hasattr(socket, "SOCK_SEQPACKET"))


class ForkedWorker:
    """A worker forked by the fork server, with the parts of ``subprocess.Popen`` the pool
    uses: ``pid``, ``stdin``, ``stdout``, ``returncode``, ``wait`` and ``poll``."""

    def __init__(self, stdin: Any, stdout: Any):
        self.pid = 0  # set when the server reports the fork (0: not yet, or never)
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: Optional[int] = None
        self._exited = threading.Event()
        self._kill_when_started = False
        self._pid_lock = threading.Lock()

    def _set_pid(self, pid: int) -> None:
        with self._pid_lock:
            self.pid = pid
            kill = self._kill_when_started
        if kill:
            _kill_group(pid)

    def _set_exit(self, returncode: int) -> None:
        self.returncode = returncode
        self._exited.set()

    def kill_group(self) -> None:
        """SIGKILL the worker's process group, at once or as soon as its fork is reported
        (a worker is requested without waiting for the server to fork it)."""
        with self._pid_lock:
            pid = self.pid
            if not pid:
                self._kill_when_started = True
                return
        _kill_group(pid)

    def poll(self) -> Optional[int]:
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"local worker {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class ForkServer:
    """The client's handle on one fork server process.

    Its reader thread runs only while the server has workers of this client (or forks
    one): an executor's shutdown leaves no thread behind, only the idle server process.
    """

    def __init__(self, python: str, env: Dict[str, str]):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        self._lock = threading.Lock()  # one request at a time
        self._state = threading.Condition(threading.Lock())  # guards what follows
        #: Requested workers whose pid the server has not reported yet, oldest first.
        self._starting: List[ForkedWorker] = []
        self._workers: Dict[int, ForkedWorker] = {}
        self._early_exits: Dict[int, int] = {}
        self._reading = False
        self.alive = True
        #: Whether it ever forked a worker (one that exits before is unusable: see _server_for).
        self.forked_any = False
        #: Replaced by a server for a newer environment: closed once its workers exit.
        self.retired = False
        # Started in the root directory, not the client's, whose modules must not shadow
        # those the server imports (each worker then moves to its pool's directory).
        self.proc = subprocess.Popen(
            [python, "-c", SERVER_CODE, str(theirs.fileno())],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=os.path.abspath(os.sep))
        theirs.close()

    def _read_loop(self) -> None:
        try:
            while True:
                data = self._sock.recv(MAX_MESSAGE)
                if not data:
                    break
                message = pickle.loads(data)
                exited: Optional[ForkedWorker] = None
                with self._state:
                    if message[0] == "started":
                        self.forked_any = True
                        worker = self._starting.pop(0)
                        worker._set_pid(message[1])
                        returncode = self._early_exits.pop(worker.pid, None)
                        if returncode is None:
                            self._workers[worker.pid] = worker
                        else:
                            exited = worker
                        self._state.notify_all()
                    elif message[0] == "exited":
                        _, pid, returncode = message
                        exited = self._workers.pop(pid, None)
                        if exited is None:  # reported before its fork was
                            self._early_exits[pid] = returncode
                    idle = not self._workers and not self._starting
                    if idle:
                        self._reading = False
                if exited is not None:
                    exited._set_exit(returncode)
                if idle:
                    self._close_if_unused()
                    return
        except OSError:
            pass
        self._server_gone()

    def retire(self) -> None:
        """Close this server once it runs no worker (it then exits)."""
        self.retired = True
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        with self._state:
            unused = self.retired and not self._workers and not self._starting
        if unused:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # the server sees the end and exits
            except OSError:
                pass

    def _server_gone(self) -> None:
        with self._state:
            self.alive = False
            self._reading = False
            workers = list(self._workers.values()) + self._starting
            self._workers.clear()
            self._starting.clear()
            self._state.notify_all()
        for worker in workers:  # their exits can no longer be reported: treat as killed
            if worker.pid:
                _kill_group(worker.pid)
            worker._set_exit(-signal.SIGKILL)

    def start_worker(self, env: Dict[str, str], cwd: str) -> ForkedWorker:
        """Ask for a worker with these environment variables and working directory; its
        stdin and stdout are pipes from this process (buffered like the pool's Popen pipes).

        Returns at once, without waiting for the server (which may still be starting) to
        fork it: what is written to its stdin waits in the pipe, and its ``pid`` is set
        when the server reports the fork. Raises OSError if the server has exited.
        """
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        worker = ForkedWorker(os.fdopen(to_worker_w, "wb", 1 << 16),
                              os.fdopen(from_worker_r, "rb", 1 << 16))
        try:
            with self._lock:
                with self._state:
                    if not self.alive:
                        raise OSError("the local fork server exited")
                    self._starting.append(worker)
                    if not self._reading:
                        self._reading = True
                        threading.Thread(target=self._read_loop, daemon=True,
                                         name="wrencore-local-forkserver").start()
                socket.send_fds(self._sock, [pickle.dumps((env, cwd))],
                                [to_worker_r, from_worker_w])
            return worker
        except BaseException:
            with self._state:
                if worker in self._starting:
                    self._starting.remove(worker)
            worker.stdin.close()
            worker.stdout.close()
            raise
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_servers: Dict[Tuple[int, str, Tuple[Tuple[str, str], ...]], ForkServer] = {}
_servers_lock = threading.Lock()


def _server_for(python: str, base_env: Dict[str, str]) -> Tuple[Tuple[Any, ...], ForkServer]:
    key = (os.getpid(), python, tuple(sorted(base_env.items())))
    with _servers_lock:
        server = _servers.get(key)
        if server is not None and not server.alive and not server.forked_any:
            # It exited before its first fork: another would too (the pool then starts its
            # workers as new interpreters, which report what fails).
            try:
                code: Any = server.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # closed its socket, still exiting
                code = "unknown"
            raise OSError(f"the local fork server exited before forking a worker (exit code "
                          f"{code})")
        if server is None or not server.alive:
            for old_key in [k for k in _servers if k[0] != key[0]]:
                del _servers[old_key]  # inherited through a fork of the client: not ours
            for old_key in [k for k in _servers if k[:2] == key[:2]]:
                _servers.pop(old_key).retire()  # started in an older environment
            server = _servers[key] = ForkServer(python, base_env)
    return key, server


def prestart(python: str, base_env: Dict[str, str]) -> None:
    """Start this process's fork server for ``python`` and ``base_env`` now, if it does not
    run yet, so that it imports the worker's modules while the client prepares its first
    calls (an executor does this when it is created)."""
    try:
        _server_for(python, base_env)
    except OSError as exc:
        logger.debug("could not start the local fork server early: %s", exc)


def start_worker(python: str, env: Dict[str, str], cwd: str,
                 base_env: Dict[str, str]) -> ForkedWorker:
    """A worker forked by this process's fork server for ``python`` and ``base_env`` (the
    environment the server starts with: its imports and ``sys.path`` depend on it), started
    first if need be. ``env`` is the worker's own environment."""
    key, server = _server_for(python, base_env)
    try:
        return server.start_worker(env, cwd)
    except OSError:
        with _servers_lock:
            if _servers.get(key) is server and server.forked_any:
                del _servers[key]  # it worked before: the next request starts a new one
        raise
