"""Starting real service processes for tests, and waiting until they report SERVING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lada.netports import free_port as free_port  # the tests' servers take ports as lada up does

REPO_ROOT = Path(__file__).resolve().parent.parent
LADA = [sys.executable, "-m", "lada.cli"]


def health_status(address: str, service: str = "", timeout: float = 2.0) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@dataclass
class ServiceProcess:
    """A `lada ...` subprocess with its log file; `stop()` sends SIGTERM, then SIGKILL."""

    proc: subprocess.Popen[bytes]
    address: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"process exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if health_status(self.address) == "SERVING":
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.address} not SERVING after {timeout}s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)


def start_service(
    args: Sequence[str], port: int, log_dir: Path, name: str, env: dict[str, str] | None = None
) -> ServiceProcess:
    """Start `lada <args>` listening on `port`; the caller waits with wait_serving()."""
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [*LADA, *args], cwd=REPO_ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    return ServiceProcess(proc, f"127.0.0.1:{port}", log_path)


def run_lada_up(config: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`lada up --config CONFIG --out OUT` as a user runs it, with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "lada.cli", "up", "--config", str(config), "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
