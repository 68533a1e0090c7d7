"""Processes, ports and measurements shared by the benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
SECRET = "whsec_bench" + "0" * 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


class Process:
    """A child process with its output in a log file; stopped (SIGINT, then SIGKILL) on exit."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("w")
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=logs
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_mb(self) -> float:
        """Resident memory of the process, in MiB (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        raise RuntimeError(f"{self.name} has no VmRSS")

    def wait_http(self, url: str, timeout: float = 30.0) -> float:
        """Seconds from the start until ``url`` answers (any status below 500)."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status < 500:
                        return time.perf_counter() - self.started
            except urllib.error.HTTPError as refused:
                if refused.code < 500:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} did not answer {url} in {timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


@contextlib.contextmanager
def running(name: str, args: list[str], env: dict[str, str], logs: Path) -> Iterator[Process]:
    process = Process(name, args, env, logs)
    try:
        yield process
    finally:
        process.stop()


def base_env(**extra: str) -> dict[str, str]:
    """This environment without payherald's or the providers' settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAYHERALD_", "STRIPE_", "TWILIO_", "SMTP_"))
    }
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def payherald(*args: str) -> list[str]:
    return [PYTHON, "-m", "payherald", *args]


def peer(kind: str, port: int, *extra: str) -> list[str]:
    return [PYTHON, str(BENCH / "peers.py"), kind, "--port", str(port), *extra]


def reference(kind: str, port: int, *extra: str) -> list[str]:
    return [PYTHON, str(BENCH / "references.py"), kind, "--port", str(port), *extra]


def load(url: str, *args: str, secret: str = SECRET) -> dict[str, Any]:
    """Run the load generator as its own process; its JSON summary."""
    result = subprocess.run(
        [PYTHON, str(BENCH / "loadgen.py"), "--url", url, "--secret", secret, *args],
        capture_output=True,
        text=True,
        check=False,
        env=base_env(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"loadgen failed: {result.stderr[-2000:]}")
    return dict(json.loads(result.stdout))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def post(url: str) -> None:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
