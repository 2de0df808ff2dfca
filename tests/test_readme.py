"""The README's own rules: every code block runs or says why not, snippets survive moved ports, links resolve.

Running the blocks against a demo is tests/test_make_run.py's job (one `make run` per suite); here, the extraction
and the runner on small examples, and the README's structure."""

import re
import sys
from pathlib import Path

import pytest

from tests.readme_blocks import (
    Block,
    ReadmeError,
    Session,
    anchors,
    extract_blocks,
    github_anchor,
    links_to_anchors,
    run_blocks,
)

README = Path(__file__).resolve().parents[1] / "README.md"

EXAMPLE = """# Title

```sh
echo one
```

Some prose with ```` ``` ```` in it.

<!-- not run: production settings, not the demo -->
```sh
gunicorn gatehouse.asgi:application
```

```json
{"shown": true}
```

````python
print("a fence of four holds ``` inside")
```
print("still inside")
````

~~~bash
echo tilde
~~~
"""


def test_blocks_come_out_in_order_with_language_line_and_whether_they_run():
    blocks = extract_blocks(EXAMPLE)
    assert [(b.language, b.line, b.runs) for b in blocks] == [
        ("sh", 3, True),
        ("sh", 10, False),
        ("json", 14, False),
        ("python", 18, True),
        ("bash", 24, True),
    ]
    assert blocks[0].text == "echo one\n"
    assert blocks[1].not_run == "production settings, not the demo"
    assert blocks[3].text == 'print("a fence of four holds ``` inside")\n```\nprint("still inside")\n'
    assert [b.kind for b in blocks] == ["shell", "shell", "shown", "python", "shell"]


@pytest.mark.parametrize(
    ("markdown", "complaint"),
    [
        ("```\necho\n```\n", "line 1: a code block without a language"),
        ("text\n\n```ruby\nputs 1\n```\n", "line 3: a code block in 'ruby'"),
        ("<!-- not run: -->\n```sh\necho\n```\n", "line 1: a 'not run' marker must say why"),
        ("<!-- not run: data -->\n```json\n{}\n```\n", "line 1: a 'not run' marker on a json block"),
        ("<!-- not run: why -->\nprose\n```sh\necho\n```\n", "line 1: a 'not run' marker must be the line before"),
        ("text\n<!-- not run: why -->\n", "line 2: a 'not run' marker with no code block after it"),
        ("<!-- not run: a -->\n<!-- not run: b -->\n```sh\n```\n", "line 1: a 'not run' marker with no code block"),
        ("```sh\necho\n", "line 1: a code block that is never closed"),
    ],
)
def test_a_block_that_neither_runs_nor_says_why_not_is_refused(markdown, complaint):
    with pytest.raises(ReadmeError, match=re.escape(complaint)):
        extract_blocks(markdown)


def test_a_marker_may_stand_a_blank_line_above_its_block():
    (block,) = extract_blocks("<!-- not run: the suite itself -->\n\n```sh\nmake test\n```\n")
    assert block.not_run == "the suite itself" and not block.runs


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Two commands", "two-commands"),
        ("When the record changes after the decision (`stale`)", "when-the-record-changes-after-the-decision-stale"),
        ("Configuration in the trail: who gave the agent this power, and when", None),
        ("Downstream MCP servers (Gatehouse as an MCP client)", "downstream-mcp-servers-gatehouse-as-an-mcp-client"),
        ("For business owners, approvers and auditors", "for-business-owners-approvers-and-auditors"),
        ("Small steps add up: cumulative limits and budgets", "small-steps-add-up-cumulative-limits-and-budgets"),
        ("A — B", "a--b"),
        ("[Linked](https://example.com) heading", "linked-heading"),
        ("Délégation", "délégation"),
    ],
)
def test_anchors_follow_githubs_rules(heading, anchor):
    expected = anchor or "configuration-in-the-trail-who-gave-the-agent-this-power-and-when"
    assert github_anchor(heading) == expected


def test_repeated_headings_get_numbered_anchors_and_code_is_not_a_heading():
    markdown = "# Logs\n\n## Logs\n\n```sh\n# not a heading\n```\n\n### Logs\n"
    assert anchors(markdown) == {"logs", "logs-1", "logs-2"}
    assert links_to_anchors("See [logs](#logs) and `[x](#not-a-link)`.\n```sh\n[y](#nor-this)\n```\n") == ["logs"]


@pytest.fixture
def root(tmp_path):
    """A repository root whose `.venv/bin/python` is the suite's interpreter, as in the copy test_make_run runs."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    return tmp_path


def test_shell_state_carries_from_block_to_block_and_python_reads_what_was_exported(root, tmp_path):
    session = Session(root, {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, tmp_path / "session")
    try:
        first = session.run(Block("sh", 'export GREETING="hello from $PWD"\nLOCAL=kept\ncat\n', 1))
        second = session.run(Block("sh", 'echo "$LOCAL"\n', 5))
        third = session.run(Block("python", 'import os\nprint(os.environ["GREETING"], os.getcwd())\n', 9))
    finally:
        session.close()
    assert (first.status, first.output.strip()) == (0, "")  # `cat` read /dev/null, not the session's input
    assert (second.status, second.output.strip()) == (0, "kept")
    assert third.status == 0 and third.output.split() == ["hello", "from", str(root), str(root)]


def test_a_failing_command_fails_its_block_with_its_output_and_nothing_after_runs(root, tmp_path):
    (root / "README.md").write_text(
        "```sh\necho before\nfalse | true\necho not reached\n```\n\n```sh\necho never\n```\n"
    )
    outcomes = run_blocks(root, {"PATH": "/usr/bin:/bin"}, tmp_path / "session")
    assert len(outcomes) == 1
    (failed,) = outcomes
    assert failed.status == 1 and failed.output.strip() == "before"
    assert "README.md line 1 (sh) exited 1" in failed.report() and "false | true" in failed.report()


def test_a_block_that_hangs_is_stopped(root, tmp_path):
    session = Session(root, {"PATH": "/usr/bin:/bin"}, tmp_path / "session")
    try:
        outcome = session.run(Block("sh", "echo started\nsleep 30\n", 1), timeout=1)
    finally:
        session.close()
    assert outcome.status == 124 and "started" in outcome.output and "timed out" in outcome.output


# --- The README itself ----------------------------------------------------------------------------------------------


def readme_blocks() -> list[Block]:
    return extract_blocks(README.read_text())


def test_every_readme_block_runs_or_says_why_not():
    blocks = readme_blocks()  # raises on a block without a language or a marker in the wrong place
    running = [block for block in blocks if block.runs]
    assert len(running) >= 6, "the README's try-it blocks went missing"
    assert running[0].text.startswith("export GATEHOUSE=http://127.0.0.1:${GATEHOUSE_WEB_PORT:-8000}\n")


def test_readme_snippets_work_on_moved_ports_and_download_nothing():
    for block in readme_blocks():
        if not block.runs:
            continue
        without_defaults = re.sub(r"\$\{GATEHOUSE_\w+_PORT:-\d+\}", "", block.text)
        assert not re.search(r"(127\.0\.0\.1|localhost):\d", without_defaults), (
            f"README.md line {block.line}: a fixed port; use $GATEHOUSE (set in the first block)\n{block.text}"
        )
        assert not re.search(r"\b(npx|uvx|pip install|npm (install|exec)|curl [^\n]*\| *(ba)?sh)\b", block.text), (
            f"README.md line {block.line}: downloads at run time; install it with `make install`\n{block.text}"
        )
        if block.kind == "shell":
            code = re.sub(r"(^|\s)#.*", "", block.text)  # comments may name manage.py in passing
            bare = re.search(r"(?<!\.venv/bin/)\bpython3?\b|(?<!\.venv/bin/python )\bmanage\.py\b", code)
            assert not bare, f"README.md line {block.line}: say .venv/bin/python, the demo's interpreter\n{block.text}"


def test_every_in_page_link_of_the_readme_names_a_heading():
    text = README.read_text()
    known = anchors(text)
    broken = sorted({target for target in links_to_anchors(text) if target not in known})
    assert not broken, f"README.md links to anchors no heading gives: {broken}"
