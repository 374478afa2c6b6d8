"""moto's S3 server in a process of its own, so that a test can freeze it.

A process stopped with SIGSTOP is what a hung endpoint looks like from outside: the kernel
still accepts connections on its port (the listen backlog), and nothing ever answers. A
ThreadedMotoServer (tests/conftest.py) runs inside the test's own process and cannot be
stopped that way. `Gate` stands in front of a server and refuses connections for a while,
as a crashed endpoint does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import boto3

from tests.conftest import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata service
}


class MotoProcess:
    """`python -m moto.server` on 127.0.0.1; `freeze_for` stops it for a while."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}
        self.proc: subprocess.Popen | None = None
        self._timers: list[threading.Timer] = []

    def start(self, timeout_s: float = 30) -> MotoProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # werkzeug logs a line per request
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.client().list_buckets()
                return self
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto's server did not start on {self.endpoint}") from None
                time.sleep(0.1)

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)

    def freeze_for(self, seconds: float) -> None:
        """Stop the server now and continue it `seconds` later (from a timer thread)."""
        self.freeze()
        timer = threading.Timer(seconds, self.thaw)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def stop(self) -> None:
        """Continue (a stopped process would keep SIGTERM pending) and end the server."""
        for timer in self._timers:
            timer.cancel()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def moto_process():
    """A started MotoProcess, always continued and ended afterwards."""
    server = MotoProcess().start()
    try:
        yield server
    finally:
        server.stop()


class Gate:
    """A TCP forwarder on 127.0.0.1 in front of a server: `close` makes its port refuse
    connections (and cuts the open ones), as a crashed endpoint does, and `open` lets them
    through again to the same server (its objects kept, unlike a restarted moto)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> Gate:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        for sock in [listener, *conns]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
