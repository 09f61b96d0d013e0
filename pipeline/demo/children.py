"""siyu processes started by another siyu process (``siyu demo`` runs a worker and a collector).

Each child is ``python -m pipeline.cli <command>`` with its whole configuration in its
environment (:func:`child_env`), so it runs exactly the settings of its parent, whatever
``.env`` says; its output goes to a log file. A child gets a session of its own, so a
Ctrl-C in the terminal reaches only the parent, which then stops its children in order
(SIGTERM, then a wait) instead of having them all torn down at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from pipeline.errors import SiyuError
from pipeline.settings import Settings


class ChildFailed(SiyuError):
    """A child process exited or did not get ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_env(s: Settings) -> dict[str, str]:
    """``os.environ`` plus every setting of ``s`` as its ``SIYU_*`` variable.

    A setting that is None is removed from the environment, so the child falls back to the
    default rather than to a value the parent overrode.
    """
    env = dict(os.environ)
    for name, value in s.model_dump().items():
        var = f"SIYU_{name.upper()}"
        if value is None:
            env.pop(var, None)
        elif isinstance(value, dict | list):
            env[var] = json.dumps(value)
        elif isinstance(value, bool):
            env[var] = "true" if value else "false"
        else:
            env[var] = str(value)
    return env


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


class Child:
    """One running ``siyu <command>``; ready when ``ready_url`` answers 200."""

    def __init__(
        self, name: str, command: list[str], s: Settings, ready_url: str, log_path: Path
    ) -> None:
        self.name = name
        self.ready_url = ready_url
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", *command],
                env=child_env(s),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def check_alive(self) -> None:
        """Raise :class:`ChildFailed` (with the end of its log) if the child has exited."""
        code = self.proc.poll()
        if code is not None:
            raise ChildFailed(
                f"the {self.name} exited with code {code} ({self.log_path}: {_tail(self.log_path)})"
            )

    def ready(self) -> bool:
        self.check_alive()
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() >= deadline:
                raise ChildFailed(
                    f"the {self.name} was not ready after {timeout_s:.0f}s "
                    f"({self.ready_url}); see {self.log_path}"
                )
            time.sleep(0.3)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (a worker commits what is done, a collector drains), wait; SIGKILL after
        ``timeout_s``. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


class Children:
    """Children stopped together, the last started first, however the block is left."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    def start(
        self, name: str, command: list[str], s: Settings, ready_url: str, log_path: Path
    ) -> Child:
        child = Child(name, command, s, ready_url, log_path)
        self.started.append(child)
        return child

    def check_alive(self) -> None:
        for child in self.started:
            child.check_alive()

    def stop_all(self) -> None:
        try:
            while self.started:
                self.started[-1].stop()
                self.started.pop()
        except BaseException:  # a second Ctrl-C while waiting: leave nothing running
            for child in self.started:
                child.proc.kill()
                child.proc.wait()
            self.started.clear()
            raise

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
