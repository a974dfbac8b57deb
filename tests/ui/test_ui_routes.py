"""The diagnostics page's routes, over HTTP against the ASGI app (no browser, no model)."""

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

STATIC = Path(__file__).resolve().parents[2] / "app" / "static"


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    # No lifespan: the page's routes need no model.
    return TestClient(create_app(Settings(models_root=tmp_path, api_key="k-123")))


def test_ui_serves_the_page_without_the_api_key(client: TestClient) -> None:
    response = client.get("/ui")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert 'data-testid="heatmap"' in response.text


def test_ui_assets_referenced_by_the_page_are_served_with_their_types(
    client: TestClient,
) -> None:
    page = client.get("/ui").text
    refs = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page)
    assert sorted(refs) == ["/ui/static/ui.css", "/ui/static/ui.js"]
    for ref in refs:
        response = client.get(ref)
        assert response.status_code == 200
        assert response.content == (STATIC / ref.rsplit("/", 1)[1]).read_bytes()
    assert client.get("/ui/static/ui.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/ui.css").headers["content-type"].startswith("text/css")


def test_ui_page_loads_nothing_from_another_origin() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", text), path.name
        assert not re.search(r"""fetch\(\s*["'`]https?:""", text), path.name
        assert "@import" not in text, path.name


@pytest.mark.parametrize("name", ["index.html", "nope.js", "..%2Fconfig.py", "%2e%2e%2fmain.py"])
def test_ui_static_rejects_unknown_files_with_the_error_shape(
    client: TestClient, name: str
) -> None:
    response = client.get(f"/ui/static/{name}")
    assert response.status_code == 404
    assert set(response.json()) >= {"error"}
    assert "config" not in response.text and "Traceback" not in response.text


def test_ui_routes_stay_out_of_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]


def test_ui_trailing_slash_redirects_to_the_page(client: TestClient) -> None:
    response = client.get("/ui/", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/ui"
