"""Starts the real holdfast server for the Python tests (no mock): its binary is the one the
Rust tests built (scripts/python-tests.sh says where), with a config of its own on free
loopback ports and a temporary data directory."""

import contextlib
import hashlib
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

import pytest

INGEST_TOKEN = "hf_py_ingest_token"
REVIEWER_TOKEN = "hf_py_reviewer_token"
ADMIN_TOKEN = "hf_py_admin_token"
OTHER_INGEST_TOKEN = "hf_py_other_ingest_token"


def _free_ports(count: int) -> list:
    """Distinct free loopback ports (all held until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Server:
    grpc_addr: str
    http_addr: str
    log_path: str

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


class ServerProcess(Server):
    """The server binary on fixed ports and a data directory that outlive restarts."""

    def __init__(self, tmp: str):
        binary = os.environ.get("HOLDFAST_SERVER_BIN")
        if not binary or not os.path.exists(binary):
            pytest.fail("HOLDFAST_SERVER_BIN must name a built holdfast-server "
                        "(scripts/python-tests.sh)")
        self.binary = binary
        self.tmp = tmp
        self.grpc_port, self.http_port, metrics_port = _free_ports(3)
        super().__init__(f"127.0.0.1:{self.grpc_port}", f"http://127.0.0.1:{self.http_port}",
                         os.path.join(tmp, "server.log"))
        self.config = os.path.join(tmp, "holdfast.toml")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(f'metrics_listen = "127.0.0.1:{metrics_port}"\n')
            for name, token, role in [("backend", INGEST_TOKEN, "ingest"),
                                      ("reviewer", REVIEWER_TOKEN, "ediscovery_admin"),
                                      ("admin", ADMIN_TOKEN, "admin"),
                                      ("other-backend", OTHER_INGEST_TOKEN, "ingest")]:
                f.write(f'[[tokens]]\nname = "{name}"\nsha256 = "{_sha256(token)}"\n'
                        f'roles = ["{role}"]\n')
            f.write("[index]\ncommit_interval_ms = 100\n")
        self.process = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--config", self.config,
                    "--data-dir", os.path.join(self.tmp, "data"),
                    "--listen", self.grpc_addr,
                    "--http-listen", f"127.0.0.1:{self.http_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                # Not the caller's HOLDFAST_* settings: they would override the config.
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("HOLDFAST_")},
                    "RUST_LOG": "info",
                },
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited early:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not start:\n{self.log()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """Stops the server as a crash would (SIGKILL): no orderly shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def _running_server():
    with tempfile.TemporaryDirectory() as tmp:
        running = ServerProcess(tmp)
        running.start()
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="session")
def server():
    with _running_server() as running:
        yield running


@pytest.fixture
def own_server():
    """A server of this test's own, which it may stop and start."""
    with _running_server() as running:
        yield running
