"""/api/v1/docs/ works offline and under a strict CSP: Swagger UI's files come from this origin, collected and served
as the project serves static files, and the page itself carries no inline script or style."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.test import Client


class PageParts(HTMLParser):
    """What a page loads (script src, link href) and whether it has inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self._tag = tag
        if tag == "script" and values.get("src"):
            self.loads.append(values["src"] or "")
        if tag == "link" and values.get("href"):
            self.loads.append(values["href"] or "")
        if tag == "style":
            self.inline.append("<style>")
        if any(name.startswith("on") for name in values):
            self.inline.append(f"<{tag} on…>")

    def handle_data(self, data: str) -> None:
        if self._tag in ("script", "style") and data.strip():
            self.inline.append(f"<{self._tag}>{data.strip()[:40]}…")

    def handle_endtag(self, tag: str) -> None:
        self._tag = ""


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_docs_page_loads_only_its_own_origins_files_and_they_are_served(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", "--noinput", verbosity=0)  # as `make run` and a deployment do; WhiteNoise serves
    client = Client()  # made after STATIC_ROOT moved: WhiteNoise reads the collected files when it starts

    page = client.get("/api/v1/docs/")

    assert page.status_code == 200
    assert "default-src 'self'" in page["Content-Security-Policy"]
    parts = PageParts()
    parts.feed(page.content.decode())
    assert parts.inline == []
    assert len(parts.loads) == 5  # favicon, stylesheet, the two Swagger UI bundles, the start-up script
    for url in parts.loads:
        where = urlsplit(url)
        assert not where.scheme and not where.netloc and url.startswith("/"), f"{url} is not on this origin"
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert len(body(answer)) > 100, url
    assert b"SwaggerUIBundle" in body(client.get(next(url for url in parts.loads if "script" in url)))
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in parts.loads


@pytest.mark.slow
@pytest.mark.browser
def test_swagger_ui_shows_the_api_with_other_origins_unreachable(browser, live_server):
    """Offline: every request to another origin is refused; the page's own CSP would block any such request too."""
    page = browser.new_page()
    elsewhere: list[str] = []
    complaints: list[str] = []
    page.on("console", lambda message: complaints.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: complaints.append(str(error)))

    def only_here(route) -> None:
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    try:
        page.route("**/*", only_here)
        page.goto(f"{live_server.url}/api/v1/docs/")
        page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)

        assert page.inner_text(".swagger-ui .info .title").startswith("Gatehouse Agent API")
        assert page.locator(".opblock-summary-path", has_text="/api/v1/proposals").count() >= 1
        assert elsewhere == []
        assert complaints == []  # a Content-Security-Policy refusal is reported here
    finally:
        page.close()
