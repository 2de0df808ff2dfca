"""The running stack for end-to-end tests: the sample CRM, Gatehouse's web process and Celery workers, each a real
process on loopback, sharing the test database and a broker queue of their own."""

from __future__ import annotations

import email.policy
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.queue = f"gatehouse-test-{os.getpid()}-{next(_numbers)}"
        self.processes: dict[str, Process] = {}
        # The first web process's address: the workers' mail links to it too, as a deployment's GATEHOUSE_BASE_URL.
        self.base_url = ""

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "DATABASE_URL", "REDIS_URL"))}
        env.update(
            {
                "GATEHOUSE_ENV": settings.GATEHOUSE_ENV,
                "GATEHOUSE_VAR_DIR": str(self.dir / "var"),
                "GATEHOUSE_DB_NAME": str(connection.settings_dict["NAME"]),
                "GATEHOUSE_CREDENTIAL_KEYS": ",".join(settings.GATEHOUSE_CREDENTIAL_KEYS),
                "GATEHOUSE_SECRET_KEY": settings.SECRET_KEY,
                "GATEHOUSE_CELERY_QUEUE": self.queue,
                "GATEHOUSE_LOG_LEVEL": "INFO",
                # Mail is written to files the tests read (Stack.mails), not printed among the logs.
                "GATEHOUSE_EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "GATEHOUSE_EMAIL_FILE_PATH": str(self.dir / "mail"),
            }
        )
        if settings.DATABASE_URL:
            env["DATABASE_URL"] = settings.DATABASE_URL
        if settings.REDIS_URL:
            env["REDIS_URL"] = settings.REDIS_URL
        else:
            env["GATEHOUSE_BROKER_DIR"] = str(Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]).parent)
        env.update(extra)
        return env

    def start(self, name: str, argv: list[str], ready: str, *, env: dict[str, str], timeout: float = 45) -> Process:
        log = self.dir / f"{name}.log"
        with log.open("w") as out:
            popen = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = Process(name, popen, log)
        self.processes[name] = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready in process.output():
                return process
            if not process.alive():
                raise RuntimeError(f"{name} exited before it was ready:\n{process.output()[-4000:]}")
            time.sleep(0.1)
        self.stop(name)
        raise RuntimeError(f"{name} was not ready within {timeout} s:\n{process.output()[-4000:]}")

    def crm(self, name: str, token: str) -> str:
        port = free_port()
        token_file = self.dir / f"{name}.token"
        token_file.write_text(token)
        self.start(
            name,
            [
                str(BIN / "python"),
                "-m",
                "sandbox.crm",
                "--port",
                str(port),
                "--store",
                str(self.dir / f"{name}.sqlite3"),
                "--token-file",
                str(token_file),
            ],
            "listening on",
            env=self.env(),
        )
        return f"http://127.0.0.1:{port}"

    def idp(self, name: str, people: Path, client_id: str, client_secret: str) -> str:
        """The sample identity provider (sandbox/idp): its people from `people` (JSON, read at each sign-in), one
        confidential client; returns its issuer URL."""
        secret_file = self.dir / f"{name}.client-secret"
        secret_file.write_text(client_secret)
        process = self.start(
            name,
            [
                str(BIN / "python"),
                "-m",
                "sandbox.idp",
                "--people",
                str(people),
                "--data-dir",
                str(self.dir / name),
                "--client-id",
                client_id,
                "--client-secret-file",
                str(secret_file),
            ],
            "sandbox-idp listening on",
            env=self.env(),
            timeout=90,
        )
        line = next(line for line in process.output().splitlines() if "sandbox-idp listening on" in line)
        return line.rsplit(" issuer ", 1)[1].strip()

    def slack(self, name: str, token: str, signing_secret: str) -> str:
        """The Slack stand-in (sandbox/slack_standin.py) on loopback; its base URL (the Web API is under /api/)."""
        token_file, secret_file = self.dir / f"{name}.token", self.dir / f"{name}.secret"
        token_file.write_text(token)
        secret_file.write_text(signing_secret)
        port = free_port()
        argv = [str(BIN / "python"), "-m", "sandbox.slack_standin", "--port", str(port)]
        argv += ["--token-file", str(token_file), "--signing-secret-file", str(secret_file)]
        self.start(name, argv, "listening on", env=self.env())
        return f"http://127.0.0.1:{port}"

    def webhook_receiver(self, name: str, secret: str) -> str:
        """A webhook receiver (sandbox/webhook_receiver.py) on loopback that verifies signatures with `secret`; its
        base URL (deliveries to any path, its side door under /_)."""
        secret_file = self.dir / f"{name}.secret"
        secret_file.write_text(secret)
        port = free_port()
        argv = [str(BIN / "python"), "-m", "sandbox.webhook_receiver", "--port", str(port)]
        self.start(name, [*argv, "--secret-file", str(secret_file)], "listening on", env=self.env())
        return f"http://127.0.0.1:{port}"

    def otlp_receiver(self, name: str = "otlp") -> str:
        """The OTLP/HTTP trace receiver (sandbox/otlp_receiver.py) on loopback; its base URL, which is what
        OTEL_EXPORTER_OTLP_ENDPOINT names. `GET {url}/spans` lists what it was sent."""
        port = free_port()
        argv = [str(BIN / "python"), "-m", "sandbox.otlp_receiver", "--port", str(port)]
        self.start(name, argv, "otlp-receiver listening on", env=self.env())
        return f"http://127.0.0.1:{port}"

    def web(self, name: str = "web", **env: str) -> str:
        port = free_port()
        self.start(
            name,
            [
                str(BIN / "uvicorn"),
                "gatehouse.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            "Uvicorn running",
            env=self.env(**{"GATEHOUSE_BASE_URL": f"http://127.0.0.1:{port}", **env}),  # the links in its mail
        )
        self.base_url = self.base_url or f"http://127.0.0.1:{port}"
        return f"http://127.0.0.1:{port}"

    def worker(self, name: str = "worker", *, concurrency: int = 2, **env: str) -> Process:
        return self.start(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "gatehouse",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"{name}-{self.queue}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            " ready.",
            env=self.env(**({"GATEHOUSE_BASE_URL": self.base_url} if self.base_url else {}), **env),
        )

    def mails(self) -> list[EmailMessage]:
        """Every message the stack's processes sent so far, oldest first (Django's file backend: a file per
        connection, each message followed by a line of 79 dashes)."""
        found = []
        for path in sorted((self.dir / "mail").glob("*.log"), key=lambda path: path.stat().st_mtime_ns):
            for chunk in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
                if chunk.strip():
                    found.append(message_from_bytes(chunk, policy=email.policy.default))
        return found

    def stop(self, name: str, sig: int | None = None, timeout: float = 15) -> None:
        process = self.processes.pop(name, None)
        if process is None or not process.alive():
            return
        if sig is None:
            # Celery's warm shutdown waits seconds even when idle; its cold shutdown (SIGQUIT) is what a test wants.
            sig = signal.SIGQUIT if "worker" in name else signal.SIGTERM
        try:
            os.killpg(process.popen.pid, sig)
            process.popen.wait(timeout=timeout)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait(timeout=5)

    def kill(self, name: str) -> None:
        self.stop(name, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)
