"""Helpers for tests and demos: run the sample CRM (sandbox.crm) as a real subprocess and poke its side door."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENING_PREFIX = "sandbox-crm listening on "
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class CRMStartError(RuntimeError):
    """The sample CRM did not come up."""


class CRMControlError(RuntimeError):
    """A side-door call to the sample CRM did not answer 2xx."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"sandbox CRM answered {status}: {body}")
        self.status = status
        self.body = body


def _read_first_line(stream: IO[str], into: queue.Queue[str]) -> None:
    into.put(stream.readline())


@contextmanager
def run_crm(*, token: str, store: Path, port: int = 0) -> Iterator[str]:
    """Start ``python -m sandbox.crm`` on loopback and yield its base URL; stop it on exit.

    The token is passed on the command line, which is fine for a throwaway test service only.
    """
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as stderr:
        # stderr goes to a file, not a pipe, so request logging can never fill a pipe and block the server.
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                sys.executable,
                "-m",
                "sandbox.crm",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--store",
                str(store),
                "--token",
                token,
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            assert process.stdout is not None
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=_read_first_line, args=(process.stdout, lines), daemon=True).start()
            try:
                line = lines.get(timeout=STARTUP_TIMEOUT)
            except queue.Empty:
                line = ""
            if not line.startswith(LISTENING_PREFIX):
                exited_early = process.poll() is not None or line != ""
                _stop(process)
                stderr.seek(0)
                if exited_early:
                    problem = f"exited with code {process.returncode} before reporting 'listening on'"
                else:
                    problem = f"did not report 'listening on' within {STARTUP_TIMEOUT:.0f}s"
                raise CRMStartError(f"sandbox CRM {problem} (stdout {line!r}); stderr:\n{stderr.read()}")
            yield line[len(LISTENING_PREFIX) :].strip()
        finally:
            _stop(process)
            if process.stdout is not None:
                process.stdout.close()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def crm_control(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the CRM's unauthenticated side door and return the JSON answer.

    ``/_control/...`` paths are POSTed (with ``body`` or ``{}``); other paths (``/_health``, ``/_stats``) use GET
    unless a body is given.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http URL: {url!r}")
    method = "POST" if body is not None or path.startswith("/_control/") else "GET"
    data = json.dumps(body or {}).encode() if method == "POST" else None
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url.rstrip("/") + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - scheme checked above
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise CRMControlError(exc.code, exc.read().decode("utf-8", "replace")) from exc
