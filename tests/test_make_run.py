"""`make run` from a copy of the tree: the demo comes up, its token answers /api/v1/me, the README's examples run."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.readme_blocks import link_installs, run_blocks
from tests.stack import free_port

ROOT = Path(__file__).resolve().parents[1]


def copy_tracked_tree(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)  # keeps mtimes: make must not think pyproject changed


def stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_make_run_serves_the_demo_and_its_token_answers_me(tmp_path):
    copy_tracked_tree(tmp_path)
    ports = {name: free_port() for name in ("WEB", "CRM", "CRM_STAGING")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "DATABASE_URL", "REDIS_URL"))}
    env.update({f"GATEHOUSE_{name}_PORT": str(port) for name, port in ports.items()})
    env["VENV"] = str(Path(sys.executable).parents[1])  # the suite's own environment: no second install
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["make", "run"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        token = None
        while time.monotonic() < deadline:
            text = log.read_text()
            match = re.search(r"shown once\):\s+(gh_\S+)", text)
            if match and "Uvicorn running" in text and "listening on" in text and " ready." in text:
                token = match.group(1)
                break
            assert process.poll() is None, f"make run stopped early:\n{text[-3000:]}"
            time.sleep(0.5)
        assert token, f"make run did not come up:\n{log.read_text()[-3000:]}"
        base = f"http://127.0.0.1:{ports['WEB']}"
        me = httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200 and me.json()["slug"] == "collections-agent"
        assert httpx.get(f"{base}/admin/login/", timeout=10).status_code == 200
        assert re.search(r"admin\s+\S{12,}", log.read_text())  # the demo users' passwords are printed
        crm_token = (tmp_path / "var" / "sandbox" / "crm.token").read_text().splitlines()[0]  # the service account
        account = httpx.get(
            f"http://127.0.0.1:{ports['CRM']}/accounts/4471", headers={"Authorization": f"Bearer {crm_token}"}
        )
        assert account.json()["id"] == "4471"

        # The demo agent (Procfile `demo-agent`) tells its story once the web process answers, then idles.
        deadline = time.monotonic() + 150  # its export waits for the legacy poll: every 60 s, checked every 10 s
        while "Demo agent: finished" not in (text := log.read_text()) and time.monotonic() < deadline:
            assert process.poll() is None, f"make run stopped during the demo agent's story:\n{text[-3000:]}"
            time.sleep(0.5)
        story = "\n".join(line for line in text.splitlines() if "demo-agent" in line)
        assert "Demo agent: finished" in story, f"the demo agent did not finish:\n{text[-3000:]}"
        for beat in (
            "executed by rule",
            "waiting for a decision by user 'approver'",
            "dual approval",
            "refused, scope_denied",
            "Read the export back as events",
        ):
            assert beat in story, f"{beat!r} missing from the demo agent's story:\n{story}"
        assert set(re.findall(r"gh_[\w-]+", text)) == {token}  # the demo agent's own token is never printed
        # Gatehouse called the CRM with the agent's own account there, so the CRM's own log names the agent.
        assert "sandbox-crm caller=collections-agent GET /accounts/4471" in text

        # The README's examples, as written, in one shell against this demo on its moved ports (tests/readme_blocks.py).
        link_installs(tmp_path, ROOT, Path(env["VENV"]))
        failed = [outcome for outcome in run_blocks(tmp_path, env, tmp_path / "readme") if outcome.status != 0]
        assert not failed, failed[0].report()
        assert process.poll() is None  # its ending did not stop the other processes
    finally:
        stop_group(process)
        time.sleep(0.5)
        subprocess.run(["pkill", "-KILL", "-f", str(tmp_path)], check=False)
