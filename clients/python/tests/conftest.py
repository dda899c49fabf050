"""Starts the real holdfast server for the Python tests (no mock): its binary is the one the
Rust tests built (scripts/python-tests.sh says where), with a config of its own on free
loopback ports and a temporary data directory."""

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


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("HOLDFAST_SERVER_BIN")
    if not binary or not os.path.exists(binary):
        pytest.fail("HOLDFAST_SERVER_BIN must name a built holdfast-server (scripts/python-tests.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        grpc_port, http_port, metrics_port = _free_ports(3)
        config = os.path.join(tmp, "holdfast.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(
                f'metrics_listen = "127.0.0.1:{metrics_port}"\n'
                f'[[tokens]]\nname = "backend"\nsha256 = "{_sha256(INGEST_TOKEN)}"\nroles = ["ingest"]\n'
                f'[[tokens]]\nname = "reviewer"\nsha256 = "{_sha256(REVIEWER_TOKEN)}"\nroles = ["ediscovery_admin"]\n'
                f'[[tokens]]\nname = "admin"\nsha256 = "{_sha256(ADMIN_TOKEN)}"\nroles = ["admin"]\n'
                "[index]\ncommit_interval_ms = 100\n"
            )
        log_path = os.path.join(tmp, "server.log")
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [
                    binary,
                    "--config", config,
                    "--data-dir", os.path.join(tmp, "data"),
                    "--listen", f"127.0.0.1:{grpc_port}",
                    "--http-listen", f"127.0.0.1:{http_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                # Not the caller's HOLDFAST_* settings: they would override the config.
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("HOLDFAST_")},
                    "RUST_LOG": "info",
                },
            )
        running = Server(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", log_path)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the server exited early:\n{running.log()}")
                try:
                    socket.create_connection(("127.0.0.1", grpc_port), timeout=1).close()
                    socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"the server did not start:\n{running.log()}")
                    time.sleep(0.1)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
