"""/docs and /redoc work offline: every script, stylesheet and icon they load is served by the
gateway itself from installed files, and the pages name no external host (checked on the HTML,
without a browser)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from fastapi.testclient import TestClient

from service.docs_ui import ASSETS, REDOC_BUNDLE, redoc_bundle


class Refs(HTMLParser):
    """Every URL an HTML page makes the browser load: src, href and link attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def refs(html: str) -> list[str]:
    parser = Refs()
    parser.feed(html)
    return parser.urls


def check_page(client: TestClient, path: str, expected_assets: set[str]) -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    # no absolute URL anywhere in the page: scripts, styles, fonts, favicon, validator
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), re.findall(
        r"(?:https?:)?//[^\s\"'<>]+", html
    )
    urls = refs(html)
    assert {u.rsplit("/", 1)[-1] for u in urls} >= expected_assets, urls
    for url in urls:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        name = url.rsplit("/", 1)[-1]
        expected = redoc_bundle() if name == REDOC_BUNDLE else (ASSETS / name).read_bytes()
        assert asset.content == expected
    return html


def test_swagger_ui_is_served_from_the_gateway(client: TestClient) -> None:
    html = check_page(client, "/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"})
    assert "'/openapi.json'" in html or '"/openapi.json"' in html
    assert '"validatorUrl": null' in html  # Swagger UI's online validator is off
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_redoc_is_served_from_the_gateway(client: TestClient) -> None:
    html = check_page(client, "/redoc", {REDOC_BUNDLE, "favicon.png"})
    assert 'spec-url="/openapi.json"' in html
    assert "fonts.googleapis" not in html


def test_redoc_bundle_loads_no_image_from_outside(client: TestClient) -> None:
    """ReDoc's footer logo came from Redocly's CDN: the served bundle inlines it, and no
    src attribute of the bundle names a remote URL."""
    js = client.get(f"/docs-assets/{REDOC_BUNDLE}")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "cdn.redoc.ly" not in js.text
    assert not re.search(r"\bsrc\s*[:=]\s*[\"'`](https?:)?//", js.text)
    assert 'alt:"redocly logo"' in js.text and "data:image/svg+xml;base64," in js.text


def test_assets_have_their_types_and_are_not_in_the_schema(client: TestClient) -> None:
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    css = client.get("/docs-assets/swagger-ui.css")
    assert "javascript" in js.headers["content-type"] and len(js.content) > 100_000
    assert css.headers["content-type"].startswith("text/css")
    assert client.get("/docs-assets/missing.js").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith(("/docs", "/redoc")) for p in paths)
