"""Progress of long management commands: a bar on a terminal, a plain line now and then anywhere else (CI, cron).

No dependency (tqdm would do the bar, but each command needs only a counter and a total, and the plain-line mode
for logs is the part that matters in production). It writes to the stream it is given: the commands pass their
stderr, so their stdout stays the result a script may pipe (`export_audit --output -`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from django.core.management.base import OutputWrapper

# On a terminal: redraw at most this often, so a tight loop does not spend its time drawing.
REDRAW_EVERY = 0.1
# Elsewhere: one line at most this often. A run shorter than this prints nothing (its result says enough).
LINE_EVERY = 10.0
BAR_WIDTH = 30


class Progress:
    """`with Progress(self.stderr, total=n, label="verify_audit", unit="events") as progress: progress.update(done)`.

    `total` may be None (unknown): the count is shown without a bar or a percentage.
    """

    def __init__(
        self,
        stream: TextIO | OutputWrapper,
        *,
        total: int | None,
        label: str,
        unit: str = "",
        tty: bool | None = None,
        line_every: float = LINE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.unit = unit
        self.tty = _isatty(stream) if tty is None else tty
        self.line_every = line_every
        self.clock = clock
        self.done = 0
        self.started = clock()
        self._last_drawn: float | None = None
        self._lines = 0
        self._line_done: int | None = None  # the count the last plain line showed
        self._finished = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def update(self, done: int, total: int | None = None) -> None:
        """Set how many are done (and, when it changed, the total)."""
        self.done = done
        if total is not None:
            self.total = total
        if self.total is not None and done > self.total:
            self.total = done  # more came in while we worked (events appended during a walk)
        now = self.clock()
        if self.tty:
            if self._last_drawn is None or now - self._last_drawn >= REDRAW_EVERY:
                self._draw(now)
        elif now - (self._last_drawn if self._last_drawn is not None else self.started) >= self.line_every:
            self._line(now)

    def finish(self) -> None:
        """The last state: the bar drawn and its line ended; in a log, a closing line if the run was long enough to
        have printed any, and moved since."""
        if self._finished:
            return
        self._finished = True
        now = self.clock()
        if self.tty:
            self._draw(now)
            self._write("\n")
        elif self._lines and self.done != self._line_done:
            self._line(now)

    # --- Drawing ------------------------------------------------------------------------------------------------

    def text(self, now: float | None = None) -> str:
        """`verify_audit: 4,200/10,000 events (42%), 3 s`"""
        elapsed = (self.clock() if now is None else now) - self.started
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            share = min(1.0, self.done / self.total)
            return f"{self.label}: {self.done:,}/{self.total:,}{unit} ({share:.0%}), {elapsed:.0f} s"
        return f"{self.label}: {self.done:,}{unit}, {elapsed:.0f} s"

    def _draw(self, now: float) -> None:
        self._last_drawn = now
        if self.total:
            filled = int(BAR_WIDTH * min(1.0, self.done / self.total))
            bar = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "] "
        else:
            bar = ""
        self._write(f"\r{bar}{self.text(now)}\x1b[K")  # \x1b[K: clear what a longer previous line left

    def _line(self, now: float) -> None:
        self._last_drawn = now
        self._lines += 1
        self._line_done = self.done
        self._write(self.text(now) + "\n")

    def _write(self, text: str) -> None:
        if isinstance(self.stream, OutputWrapper):
            # As is: no added line ending, and not in the red a command's stderr uses for errors.
            self.stream.write(text, style_func=_plain, ending="")
        else:
            self.stream.write(text)
        self.stream.flush()


def _plain(text: str) -> str:
    return text


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
