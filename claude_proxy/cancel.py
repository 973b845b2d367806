"""Noticing that a client hung up, and stopping the provider's work for it.

A :class:`Cancel` belongs to one request: it is set when the client's
connection closes, and aborts the provider socket attached to it, so the
provider stops generating tokens nobody will read.  One
:class:`DisconnectWatcher` thread watches every request's client socket.
"""

import os
import selectors
import socket
import threading
import time

from .process import selector_capacity

DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)  # POSIX: one non-blocking call on a blocking socket


class Cancel:
    """Set when the client hangs up; aborts the provider socket it is attached to."""

    def __init__(self):
        self._lock = threading.Lock()
        self._set = False
        self.aborted = False  # the proxy is shutting down: this request is being ended
        self._sock = None
        self._ended = threading.Event()  # set with either: wakes a request that waits (retries)

    def is_set(self):
        return self._set

    def is_over(self):
        """The request is being ended: its client hung up, or the proxy is stopping."""
        return self._ended.is_set()

    def wait(self, seconds):
        """Pause for ``seconds``, or less if the client hangs up or the proxy stops;
        True if the pause was cut short so."""
        return self._ended.wait(seconds)

    def attach(self, sock):
        """Watch ``sock`` from now on; False if the client is already gone (or the proxy going)."""
        with self._lock:
            self._sock = sock
            return not (self._set or self.aborted)

    def detach(self):
        """The provider's answer is complete: its socket is no longer ours to abort."""
        with self._lock:
            self._sock = None

    def fire(self):
        """The client hung up: abort the provider socket, if one is attached.

        The shutdown happens under the lock, so it cannot race :meth:`detach`:
        once ``detach`` has returned, the socket may be back in the pool
        serving another request, and nothing here touches it any more.
        """
        with self._lock:
            self._set = True
            self._ended.set()
            self._abort_provider()

    def abort(self):
        """The proxy is shutting down: stop waiting for the provider (the client is still there)."""
        with self._lock:
            self.aborted = True
            self._ended.set()
            self._abort_provider()

    def _abort_provider(self):
        """Shut the attached provider socket down (lock held)."""
        if self._sock is not None:
            try:
                # The base-class shutdown works on TLS sockets too, and wakes
                # the thread blocked reading it; it is closed by that thread.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:  # already closed: nothing left to stop
                pass


class DisconnectWatcher:
    """One thread that notices clients hanging up while their answer is pending.

    A client that closes its connection makes its socket readable with EOF.
    Without this, a cancelled request would only be noticed at the next write,
    which for a provider that is thinking (or a non-stream answer) can be
    minutes of tokens generated for nobody.

    Most answers begin within a fraction of a second, so a watched socket is
    only handed to the selector once it has waited ``INTERVAL``: a quick
    request costs a dict entry, not two system calls and a thread wake-up.
    A hang-up is noticed within about two intervals.
    """

    INTERVAL = 0.2

    def __init__(self, capacity=None):
        self._selector = selectors.DefaultSelector()
        # Past the selector's capacity (512 sockets on Windows) a request is not watched:
        # its hang-up is then noticed at the next write, as without the watcher.
        self._capacity = selector_capacity() if capacity is None else capacity
        self._lock = threading.Lock()
        self._pending = {}  # socket -> (Cancel, time watched), not yet in the selector
        self._sleeping = False  # the thread waits for work: wake it on the next watch()
        self._wakeup = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="disconnect-watcher", daemon=True)
        self._thread.start()

    def watch(self, client_sock):
        cancel = Cancel()
        with self._lock:
            self._pending[client_sock] = (cancel, time.monotonic())
            wake, self._sleeping = self._sleeping, False
        if wake:
            self._wakeup.set()
        return cancel

    def unwatch(self, client_sock):
        with self._lock:
            if self._pending.pop(client_sock, None) is not None:
                return
            try:
                self._selector.unregister(client_sock)
            except (KeyError, ValueError, OSError):  # never registered, or closed: nothing to undo
                pass

    def abort_all(self):
        """End every watched request's wait for its provider (the proxy is stopping)."""
        with self._lock:
            cancels = [cancel for cancel, _ in self._pending.values()]
            cancels += [key.data for key in self._selector.get_map().values()]
        for cancel in cancels:
            cancel.abort()

    def close(self):
        with self._lock:
            self._closed = True
        self._wakeup.set()

    def _run(self):
        while not self._closed:
            with self._lock:
                self._promote(time.monotonic() - self.INTERVAL)
                selecting = bool(self._selector.get_map())
                self._sleeping = idle = not selecting and not self._pending
                self._wakeup.clear()
                if self._closed:  # close() may have set the event just before the clear
                    break
            if not selecting:  # nothing yet, or only recent ones: wait for work, or for them to age
                self._wakeup.wait(None if idle else self.INTERVAL)
                continue
            try:
                events = self._selector.select(self.INTERVAL)
            except (OSError, ValueError):  # a socket closed under us; the next round is clean
                self._wakeup.wait(self.INTERVAL)  # (and never a busy loop if it is not)
                events = []
            for key, _ in events:
                self._check(key.fileobj, key.data)
        self._selector.close()

    def _promote(self, watched_before):
        """Move the sockets watched before ``watched_before`` into the selector (lock held)."""
        for sock, (cancel, since) in list(self._pending.items()):
            if self._capacity is not None and len(self._selector.get_map()) >= self._capacity:
                return
            if since <= watched_before:
                del self._pending[sock]
                try:
                    self._selector.register(sock, selectors.EVENT_READ, cancel)
                except (KeyError, ValueError, OSError):  # closed meanwhile
                    pass

    def _check(self, sock, cancel):
        try:
            # Never block here: the handler may have read what made it readable
            # meanwhile, and its socket waits up to its idle timeout.  MSG_DONTWAIT
            # where there is one, which leaves the socket as it is (it may be a
            # blocking one: socket_timeouts); else a duplicate made non-blocking
            # (Windows, whose sockets keep Python's timeouts: non-blocking already).
            if DONTWAIT:
                with _plain_duplicate(sock) as probe:
                    data = probe.recv(1, socket.MSG_PEEK | DONTWAIT)
            else:
                with sock.dup() as probe:
                    probe.setblocking(False)
                    data = probe.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):  # nothing to read after all: still there
            return
        except OSError:  # reset or closed: the client is gone
            data = b""
        with self._lock:
            try:
                if self._selector.get_key(sock).data is not cancel:
                    return  # unwatched meanwhile: that request is over
                self._selector.unregister(sock)
            except (KeyError, ValueError):  # unwatched meanwhile: that request is over
                return
        if not data:
            cancel.fire()
        # Otherwise the client sent more (a pipelined request): not a hang-up.


def _plain_duplicate(sock):
    """A socket object for a duplicate of ``sock``'s descriptor, without a Python
    timeout (its calls go straight to the kernel) and without touching the flags
    the two share (``socket.dup()`` would copy the timeout, and setting one
    changes the descriptor's blocking mode for ``sock`` too)."""
    return socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
