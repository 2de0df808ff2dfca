"""The README's code blocks, read out of README.md and run as a newcomer runs them, so the two cannot drift.

Every fenced block names its language. `sh` and `python` blocks run, in the README's order, against the running demo
(tests/test_make_run.py calls `run_blocks` once the demo agent has finished): the shell blocks in one bash session,
as a newcomer pastes them into one terminal, so a variable a block sets (`GATEHOUSE`, `TOKEN`) is there for the next;
a Python block is run by `.venv/bin/python` inside that session, so it reads what the shell blocks exported. A block
that is not meant to run against the demo (production settings, the suite, a benchmark) says so in the README's
source, on the line before its fence:

    <!-- not run: production settings, not the demo -->

Blocks of data (`json`, `yaml`, `sql`, `text`) are shown, never run. Anything else is an error here, so a new block
either runs or says why not.

Also here: the anchors GitHub gives the README's headings, for the test that its `](#…)` links resolve.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RUN = {"sh": "shell", "bash": "shell", "python": "python"}
SHOWN = ("json", "yaml", "sql", "text")
NOT_RUN = re.compile(r"^<!--\s*not run:(?P<reason>.*?)-->\s*$")
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


class ReadmeError(ValueError):
    """The README breaks a rule of its own blocks (a fence without a language, a marker that marks nothing…)."""


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its text, the line of its opening fence (1-based), and why it does not run."""

    language: str
    text: str
    line: int
    not_run: str | None = None

    @property
    def runs(self) -> bool:
        return self.language in RUN and self.not_run is None

    @property
    def kind(self) -> str:
        return RUN.get(self.language, "shown")


def extract_blocks(markdown: str) -> list[Block]:
    """Every fenced block of `markdown`, in order; raises ReadmeError on a block the rules above do not place."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    marker: tuple[int, str] | None = None  # (line, reason) of a `not run` comment waiting for its block
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if found := NOT_RUN.match(line.strip()):
            if marker is not None:
                raise ReadmeError(f"line {marker[0]}: a 'not run' marker with no code block after it")
            reason = found["reason"].strip()
            if not reason:
                raise ReadmeError(f"line {number}: a 'not run' marker must say why (<!-- not run: why -->)")
            marker = (number, reason)
            continue
        opening = FENCE.match(line)
        if opening is None:
            if marker is not None and line.strip():
                raise ReadmeError(f"line {marker[0]}: a 'not run' marker must be the line before a code block")
            continue
        start = number
        fence = opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower() if opening["info"].strip() else ""
        body: list[str] = []
        while True:
            if number >= len(lines):
                raise ReadmeError(f"line {start}: a code block that is never closed")
            line = lines[number]
            number += 1
            if _closes(line, fence):
                break
            body.append(line)
        if not language:
            raise ReadmeError(f"line {start}: a code block without a language (sh, python, or {', '.join(SHOWN)})")
        if language not in RUN and language not in SHOWN:
            raise ReadmeError(f"line {start}: a code block in {language!r}, which this runner neither runs nor shows")
        reason = None
        if marker is not None:
            if language not in RUN:
                raise ReadmeError(f"line {marker[0]}: a 'not run' marker on a {language} block, which never runs")
            reason = marker[1]
            marker = None
        blocks.append(Block(language=language, text="\n".join(body) + "\n", line=start, not_run=reason))
    if marker is not None:
        raise ReadmeError(f"line {marker[0]}: a 'not run' marker with no code block after it")
    return blocks


# --- Anchors --------------------------------------------------------------------------------------------------------


def headings(markdown: str) -> list[str]:
    """The text of every ATX heading (`## …`) outside code blocks, in order."""
    found: list[str] = []
    for line in _prose(markdown):
        if heading := re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line):
            found.append(heading[1])
    return found


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text, lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or an image counts by its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)  # letters, digits, _ and - stay (Unicode letters too)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor the headings of `markdown` give, with GitHub's -1, -2 … for a heading's repeats."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in headings(markdown):
        anchor = github_anchor(heading)
        if anchor in seen:
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        result.add(anchor)
    return result


def links_to_anchors(markdown: str) -> list[str]:
    """The targets of the in-page links `](#…)` outside code (blocks and inline), in order."""
    prose = "\n".join(re.sub(r"`[^`]*`", "", line) for line in _prose(markdown))
    return re.findall(r"\]\(#([^)\s]+)\)", prose)


def _prose(markdown: str) -> list[str]:
    """The lines of `markdown` outside its fenced code blocks."""
    kept: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening["fence"]
        elif fence is None:
            kept.append(line)
        elif _closes(line, fence):
            fence = None
    return kept


def _closes(line: str, fence: str) -> bool:
    """Whether `line` closes a block opened by `fence`: the same character, at least as many, nothing after them."""
    found = FENCE.match(line)
    if found is None:
        return False
    return found["fence"][0] == fence[0] and len(found["fence"]) >= len(fence) and not found["info"].strip()


# --- Running --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one block did: its exit status (0: every command in it succeeded) and everything it printed."""

    block: Block
    status: int
    output: str
    seconds: float

    def report(self) -> str:
        return (
            f"README.md line {self.block.line} ({self.block.language}) exited {self.status} "
            f"after {self.seconds:.1f} s.\n--- the block\n{self.block.text}--- its output\n{self.output}"
        )


class Session:
    """One bash session at the repository's root, fed the blocks in order, as a newcomer's terminal is.

    Each block runs with `set -e -o pipefail`, so a command that fails fails the block (and ends the session: the
    blocks after it would start from a state the README does not describe). Commands read /dev/null, not the
    session's own input. A Python block is `.venv/bin/python -` reading the block, with the root as its working
    folder, so `import gatehouse_client` finds the repository's package.
    """

    def __init__(self, root: Path, env: dict[str, str], workdir: Path) -> None:
        self.root = root
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "session.log"
        self._count = 0
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                cwd=root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )

    def run(self, block: Block, timeout: float = 120) -> Outcome:
        self._count += 1
        mark = f"@@readme-block-{self._count}"
        script = self.workdir / f"block-{self._count}.{'py' if block.kind == 'python' else 'sh'}"
        script.write_text(block.text)
        if block.kind == "shell":
            command = f"source {shlex.quote(str(script))} < /dev/null"
        else:
            command = f".venv/bin/python - < {shlex.quote(str(script))}"
        assert self.process.stdin is not None
        started = time.monotonic()
        try:
            self.process.stdin.write(
                f"printf '\\n%s\\n' '{mark}-start'\nset -e -o pipefail\n{command}\n"
                f"set +e +o pipefail\nprintf '\\n%s\\n' '{mark}-end'\n"
            )
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the session already ended: reported below
        while True:
            text = self.log.read_text(errors="replace")
            output = text.partition(f"{mark}-start\n")[2]
            if f"\n{mark}-end\n" in output:
                return Outcome(block, 0, output.rpartition(f"\n{mark}-end\n")[0], time.monotonic() - started)
            if self.process.poll() is not None:
                return Outcome(block, self.process.returncode or 1, output, time.monotonic() - started)
            if time.monotonic() - started > timeout:
                self.close()
                return Outcome(block, 124, output + f"\n(timed out after {timeout:.0f} s)", timeout)
            time.sleep(0.1)

    def close(self) -> None:
        """End the session and whatever a block left running in it (its own process group)."""
        for stop in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, stop)
                self.process.wait(timeout=10)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def link_installs(root: Path, source: Path, venv: Path) -> None:
    """Give a copy of the tree at `root` what `make install` put in `source`: `.venv` (the interpreter the README's
    examples name) and the npm packages (the MCP Inspector and its Node.js), linked, so nothing is downloaded."""
    if not (root / ".venv").exists():
        (root / ".venv").symlink_to(venv)
    packages = Path("sandbox") / "mcp_servers" / "node_modules"
    if (source / packages).is_dir() and not (root / packages).exists():
        (root / packages).symlink_to((source / packages).resolve())


def run_blocks(root: Path, env: dict[str, str], workdir: Path, *, timeout: float = 120) -> list[Outcome]:
    """Run README.md's runnable blocks at `root`, in order, in one session; stop at the first that fails."""
    blocks = [block for block in extract_blocks((root / "README.md").read_text()) if block.runs]
    session = Session(root, env, workdir)
    outcomes: list[Outcome] = []
    try:
        for block in blocks:
            outcomes.append(session.run(block, timeout=timeout))
            if outcomes[-1].status != 0:
                break
    finally:
        session.close()
    return outcomes
