"""What the people's browser tests share: a 1366 × 768 screen, clicks counted, no sideways scroll, screenshots.

A journey starts where sign-in leaves a person (the admin's home) and moves only by clicks, as that person would:
`journey.click(...)` counts each one and checks, once the page has loaded, that it fits the screen's width (a table
or a form wider than the window is a horizontal scrollbar a business owner should never meet). `page.goto` is not
used in a journey; `journey.visited` lists the pages it went through.

`journey.screenshot("owner")` writes `docs/screenshots/owner.png` when `GATEHOUSE_SCREENSHOTS` names a folder (the
README's pictures are taken this way: `GATEHOUSE_SCREENSHOTS=docs/screenshots make test PYTEST_ARGS="-m browser"`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SCREEN = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}

_SIDEWAYS_BOXES = """
[...document.querySelectorAll("body *")]
  .filter(e => ["auto", "scroll"].includes(getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth + 1)
  .map(e => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}${e.className ? "." + e.className : ""}: `
            + `${e.scrollWidth} px in ${e.clientWidth}`)
"""


class Journey:
    def __init__(self, page: Any) -> None:
        self.page = page
        self.clicks = 0
        self.visited: list[str] = [page.url]
        self.assert_fits()

    def click(self, target: Any, **options: Any) -> None:
        """Click a selector or a locator, count it, wait for what it loads and check the page fits the screen."""
        locator = self.page.locator(target) if isinstance(target, str) else target
        locator.click(**options)
        self.clicks += 1
        self.page.wait_for_load_state("load")
        if self.page.url != self.visited[-1]:
            self.visited.append(self.page.url)
        self.assert_fits()

    def assert_fits(self) -> None:
        """No horizontal scroll: the document is no wider than the window, and no box on it (Django's changelist puts
        its table in one) scrolls sideways."""
        scroll, window = self.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= window, f"{self.page.url} is {scroll} px wide on a {window} px screen"
        boxes = self.page.evaluate(_SIDEWAYS_BOXES)
        assert not boxes, f"{self.page.url} has boxes that scroll sideways: {boxes}"

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("GATEHOUSE_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)
