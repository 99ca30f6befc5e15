"""Gateway processes as users run them: ``python -m proxy`` with an environment, stopped with
their whole process group; every output is kept for the secret audit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from proxy.config.settings import Settings
from tests.support.audit import AUDIT
from tests.support.servers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without our settings, with this interpreter's ``python`` on PATH."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.fields()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@dataclass
class Gateway:
    url: str
    log: IO[bytes]
    process: subprocess.Popen[bytes]
    output: str = ""

    def read_output(self) -> str:
        """Everything the process has printed so far.

        Read at explicit offsets: the process shares the file's offset, so a seek here would
        move where its next line lands (over the start of the log).
        """
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")


def python_output(code: str, *, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """What ``python -c code`` prints, run from the project's root; fails if it fails."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=True)  # fmt: skip
    return done.stdout


def gateway_command(port: int) -> list[str]:
    return [sys.executable, "-m", "proxy", "--port", str(port)]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running(
    command: list[str] | str, env: dict[str, str], port: int, *, cwd: Path = ROOT
) -> Iterator[Gateway]:
    """Run the gateway as a subprocess until the block ends; its output goes to the audit.

    The output goes to a file, not a pipe: a busy gateway would fill a pipe nobody reads yet.
    """
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        shell=isinstance(command, str),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    gateway = Gateway(f"http://127.0.0.1:{port}", log, process)
    try:
        wait_until(
            lambda: process.poll() is not None or _healthy(gateway.url),
            timeout=30,
            what="the gateway process",
        )
        assert process.poll() is None, "the gateway exited early"
        yield gateway
    finally:
        # The whole process group, as a Procfile runner does: with a shell line, the shell
        # is not the gateway.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
        except ProcessLookupError:
            pass  # the test stopped it already
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        gateway.output = gateway.read_output()
        AUDIT.add(gateway.output)
        log.close()


def rss_mib(pid: int) -> float:
    """The resident memory of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
