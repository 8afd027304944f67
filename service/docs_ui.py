"""Swagger UI (/docs) and ReDoc (/redoc) served from files installed with the project.

FastAPI's default pages load their JavaScript, CSS, favicon and fonts from public CDNs, so they
are blank without internet. Here the app is built with `docs_url=None, redoc_url=None` and these
routes serve the same pages, as FastAPI documents for self-hosting, with every asset taken from
the `fastapi-offline` package's static folder (Swagger UI bundle and CSS, ReDoc standalone
bundle, favicon) and mounted under /docs-assets. Swagger UI's online validator is switched off
and ReDoc's Google fonts left out, so the pages make no request outside the service. ReDoc's
bundle draws its sidebar footer with an image from Redocly's CDN; it is served here as
/docs-assets/redoc.offline.js, the same bundle with that image inlined (a data: URI).
"""

from __future__ import annotations

import base64
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_URL = "/docs-assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
REDOC_BUNDLE = "redoc.offline.js"  # redoc.standalone.js with its CDN logo inlined
REDOC_LOGO_URL = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
# a plain mark in the logo's place: a grey rounded square (no request leaves the page)
REDOC_LOGO = b"data:image/svg+xml;base64," + base64.b64encode(
    b"<svg xmlns='http://www.w3.org/2000/svg' width='16' height='16'>"
    b"<rect width='16' height='16' rx='3' fill='#888'/></svg>"
)


def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle with the one image it loads from a CDN inlined."""
    return (ASSETS / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO_URL, REDOC_LOGO)


def install(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add the self-hosted documentation pages to an app built with docs_url=redoc_url=None."""
    missing = [name for name in ASSET_FILES if not (ASSETS / name).is_file()]
    if missing:
        raise RuntimeError(
            f"API documentation assets missing from {ASSETS}: {', '.join(missing)}; "
            "reinstall the project (`make install`) to restore the fastapi-offline package"
        )
    bundle = redoc_bundle()

    @app.get(f"{ASSET_URL}/{REDOC_BUNDLE}", include_in_schema=False)
    async def redoc_js() -> Response:  # before the mount, which would answer 404 for it
        return Response(
            bundle,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.mount(ASSET_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSET_URL}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, REDOC_BUNDLE),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )
