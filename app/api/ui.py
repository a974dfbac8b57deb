"""The diagnostics page: one static HTML page and its script and stylesheet.

The page is a client of the public API only (``GET /models``, ``GET /models/{name}``,
``POST /predict``, ``POST /grad``); this router just hands out the files in
``app/static/``. They are not part of the API, so they stay out of the OpenAPI schema.
"""

from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse, Response

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"

# Served files, by name. An explicit table rather than a directory mount: nothing
# outside it can be requested, whatever the path looks like.
_ASSETS: Final[dict[str, str]] = {
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}

# Same-origin only: no CDN, no inline script, no framing by other sites.
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["ui"], include_in_schema=False)


@router.get("/ui", include_in_schema=False)
def ui_page() -> Response:
    """The diagnostics page."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS
    )


@router.get("/ui/", include_in_schema=False)
def ui_page_slash() -> Response:
    """``/ui/`` -> ``/ui`` (the page's relative links assume no trailing slash)."""
    return RedirectResponse("/ui", status_code=308)


@router.get("/ui/static/{name}", include_in_schema=False)
def ui_asset(name: str) -> Response:
    """One of the page's static files (script, stylesheet)."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        # The service's one 404 mapping turns this into its `{"error", "request_id"}` body.
        raise HTTPException(status_code=404)
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=_HEADERS)
