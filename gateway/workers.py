"""``serve --workers N``: N gateway processes sharing one port.

The parent loads the config and the plugins once, binds N listening sockets to the same
address with ``SO_REUSEPORT`` (the kernel spreads new connections evenly over them, where
one shared socket would let whichever worker wakes first take a whole burst), then forks
one worker per socket. Each worker is a full gateway: its own event loop, upstream
session, provider pool and metrics. Forking after the imports makes a worker ready in
milliseconds, and the imported code's memory stays shared until written to.

The parent only supervises:
- SIGTERM or SIGINT is passed on to every worker as SIGTERM, and the parent waits for
  them to finish their requests (a second signal kills them at once);
- a worker that dies is replaced, unless it died within ``_MIN_UPTIME`` of starting: a
  worker that cannot start would otherwise be restarted forever, so then all stop and
  ``serve`` exits non-zero;
- each worker asks the kernel for SIGTERM when the parent dies (``PR_SET_PDEATHSIG``),
  so even a parent killed with SIGKILL leaves no orphan holding the port.

POSIX only (``fork``); Linux for ``SO_REUSEPORT``'s balancing and the parent-death signal.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("finetune_gateway")

_MIN_UPTIME = 1.0
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}

ServeOne = Callable[[socket.socket, int], None]


class PortInUse(Exception):
    pass


def bind_shared(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address, each with ``SO_REUSEPORT``.

    The port is first bound alone, without ``SO_REUSEPORT``: that fails if anything,
    another gateway included, already listens there, which sharing would hide.
    """
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{host}:{port} is already in use") from None
            raise
        address = probe.getsockname()  # the port the kernel chose, for port 0
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Stop(Exception):
    pass


class Supervisor:
    """Forks a worker per socket, replaces the ones that die, stops them all on a signal."""

    def __init__(
        self, sockets: list[socket.socket], serve_one: ServeOne, stop_grace: float
    ) -> None:
        self.sockets = sockets
        self.serve_one = serve_one
        self.stop_grace = stop_grace
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started)
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _STOP_SIGNALS}
        try:
            for index in range(len(self.sockets)):
                self._spawn(index)
            self._supervise()
        except _Stop:
            pass
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for sock in self.sockets:
                sock.close()
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:  # a second signal: do not wait for requests in flight
            self._signal_all(signal.SIGKILL)
            return
        self.stopping = True
        raise _Stop

    def _spawn(self, index: int) -> None:
        parent = os.getpid()
        # Signals wait until the worker is forked and recorded: a stop arriving in
        # between must neither leave it untracked nor run the parent's handler in it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code
            code = 1
            try:
                _die_with(parent)
                for signum in _STOP_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                for other, sock in enumerate(self.sockets):
                    if other != index:
                        sock.close()
                self.serve_one(self.sockets[index], index)
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = (index, time.monotonic())
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        log.info("worker %d started (pid %d)", index, pid)

    def _supervise(self) -> None:
        while self.children:
            pid, status = os.wait()
            if pid not in self.children:
                continue
            index, started = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if time.monotonic() - started < _MIN_UPTIME:
                log.error("worker %d exited with %d right after starting: stopping", index, code)
                self.failed = True
                return
            log.warning("worker %d (pid %d) exited with %d: starting another", index, pid, code)
            self._spawn(index)

    def _stop_all(self) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.children.pop(pid, None)
                continue
            if time.monotonic() > deadline:
                self._signal_all(signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.02)

    def _signal_all(self, signum: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def _die_with(parent: int) -> None:
    """Ask for SIGTERM when the parent dies (Linux), so no worker outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes  # only here: workers are the only user

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def serve_workers(
    host: str, port: int, count: int, serve_one: ServeOne, *, stop_grace: float
) -> int:
    """Run ``count`` workers on ``host:port`` until a signal; the exit status for ``serve``.

    A worker still running ``stop_grace`` seconds after it was told to stop is killed.
    """
    try:
        sockets = bind_shared(host, port, count)
    except PortInUse as exc:
        log.error("%s", exc)
        return 1
    return Supervisor(sockets, serve_one, stop_grace).run()
