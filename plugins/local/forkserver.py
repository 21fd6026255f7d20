"""The fork server process's side of ``wrencore_local.zygote`` (the client's side is there).

It is the program every local worker is forked from, so it imports only what the server
itself and a worker need: no :mod:`subprocess`, no :mod:`socket` (its control socket is a
bare ``_socket.socket``), nothing of the client.

Run as ``python -c "...; from wrencore_local.forkserver import serve; serve()" FD`` (see
``wrencore_local.zygote.SERVER_CODE``).
"""

from __future__ import annotations

import _socket
import gc
import os
import pickle
import signal
import sys
import threading

MAX_MESSAGE = 1 << 20
_FD_SIZE = 4  # a C int, as SCM_RIGHTS carries descriptors


def serve() -> None:
    """The fork server's main loop (run as ``python -c ... FD``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = _socket.socket(fileno=int(sys.argv[1]))
    from . import worker  # the worker's imports, done once here for every worker

    __import__("wrencore_runtime.sources")  # what a function sent by value is loaded with

    # The imports make no garbage for the cyclic collector to find (SERVER_CODE turns it off
    # first), and a worker's collections need never traverse what they made: frozen, those
    # objects also stay in pages the workers share with the server.
    gc.freeze()
    gc.enable()

    send_lock = threading.Lock()
    forked = threading.Semaphore(0)
    closed = threading.Event()

    def send(message: tuple) -> None:
        with send_lock:
            sock.send(pickle.dumps(message))

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:  # no worker left
                if closed.is_set():
                    return
                forked.acquire()  # until the next fork (or the client's close)
                continue
            try:
                send(("exited", pid, os.waitstatus_to_exitcode(status)))
            except OSError:
                pass

    # Started after the first fork, not before: Thread.start() waits until the new thread
    # runs, which on a busy machine can take milliseconds the first worker need not wait.
    reaper = threading.Thread(target=reap, daemon=True)
    preloaded_later = False
    while True:
        try:
            data, fds = _recv_fds(sock, 2)
        except OSError:
            data, fds = b"", []
        if not data:
            break
        env, cwd = pickle.loads(data)
        with send_lock:  # no other thread is sending while the child is forked
            pid = os.fork()
            if pid == 0:
                _become_worker(sock, fds, env, cwd, worker.main)
        for fd in fds:
            os.close(fd)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child set it already (or has exited)
        forked.release()
        send(("started", pid))
        if reaper.ident is None:
            reaper.start()
        if not preloaded_later and _idle(sock, LATER_AFTER):
            _preload_later()
            preloaded_later = True
    closed.set()
    forked.release()  # wake the reaper: it returns once the last worker is reaped
    # (the client's end is closed, so exits are no longer reported)
    if reaper.ident is not None:
        reaper.join()


#: Seconds without a request, after the first fork, before the server imports what only
#: some calls need (see :func:`_preload_later`).
LATER_AFTER = 0.02


def _idle(sock: "_socket.socket", seconds: float) -> bool:
    """Whether no request arrives within ``seconds`` (the request stays unread)."""
    sock.settimeout(seconds)
    try:
        sock.recv(1, _socket.MSG_PEEK)
    except TimeoutError:
        return True
    except OSError:
        return False  # the loop's own read will see it
    finally:
        sock.settimeout(None)
    return False


def _preload_later() -> None:
    """Import cloudpickle, which a worker needs only to pickle what the standard pickler
    cannot (a result or an exception of a class sent by value) or to rebuild such a class.

    Not before the first workers are forked: with its own imports (``dataclasses``,
    ``inspect``, ``typing``, ``platform``) it would cost the first result of a new process
    more than the rest of the server's start. Workers forked from then on share it, and
    the first ones import it themselves if a call needs it.
    """
    gc.disable()
    try:
        __import__("cloudpickle")
    except ImportError:
        pass  # the worker reports it if a call needs it
    finally:
        gc.freeze()
        gc.enable()


def _recv_fds(sock: "_socket.socket", maxfds: int):
    """``socket.recv_fds`` for a bare ``_socket.socket``: the message and its descriptors."""
    data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, _socket.CMSG_LEN(maxfds * _FD_SIZE))
    fds = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds.extend(int.from_bytes(payload[i:i + _FD_SIZE], sys.byteorder, signed=True)
                       for i in range(0, usable, _FD_SIZE))
    return data, fds


def _become_worker(sock, fds: list, env: dict, cwd: str, main) -> None:
    code = 1
    try:
        os.setpgid(0, 0)
        sock.close()
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        for fd in fds:
            os.close(fd)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import logging

        logging.getLogger(__name__).exception("local worker failed")
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code or 0)
