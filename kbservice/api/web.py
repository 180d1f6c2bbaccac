"""The auditors' web page: server-rendered HTML over the same functions as the API, signed in with an API key.

The key is kept in an HTTP-only, same-site cookie (Secure when the request came over HTTPS or
`api.secure_cookie` says so) and checked on every page exactly as a bearer key is. Every page forbids
framing and content sniffing, and its Content-Security-Policy lets only the page's own style and script
run (a fresh nonce per response): injected markup could not run a script or send a form elsewhere.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from kbservice import keys
from kbservice.api.auth import COOKIE_NAME, Principal, principal_for
from kbservice.api.charts import bar_chart, line_chart
from kbservice.api.problems import Problem
from kbservice.api.routes.learning import champion_and_previous
from kbservice.services import Services

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_CHART_METRICS = ("macro_f1", "accuracy", "model_only_accuracy")
_CASE_ROLES = (keys.RECOMMEND, keys.AUDIT)  # the roles that may see cases (patient records) and their images


def _services(request: Request) -> Services:
    return request.app.state.services


def _signed_in(request: Request) -> Principal | None:
    key = request.cookies.get(COOKIE_NAME)
    return principal_for(request, key) if key else None


def with_page_headers(response: Response, nonce: str | None = None) -> Response:
    """The security headers every page response carries (see the module doc)."""
    sources = f"'nonce-{nonce}'" if nonce else "'none'"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src {sources}; script-src {sources}; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    nonce = secrets.token_urlsafe(16)
    response = templates.TemplateResponse(request, template, context | {"csp_nonce": nonce}, status_code=status_code)
    return with_page_headers(response, nonce)


def _redirect(url: str) -> Response:
    return with_page_headers(RedirectResponse(url, status_code=303))


def _allows(principal: Principal, *permissions: str) -> bool:
    """Whether the key's role has one of the permissions (pages and the images on them ask alike)."""
    return any(keys.allows(principal.role, p) for p in permissions)


def _page(request: Request, template: str, permission: str, *more: str, **context: Any) -> Response:
    """Renders `template` for a signed-in key whose role has one of the permissions; else the sign-in page
    (no key) or 403 (a key without the role)."""
    principal = _signed_in(request)
    if principal is None:
        return _render(request, "login.html", {"title": "Sign in", "principal": None}, status_code=401)
    if not _allows(principal, permission, *more):
        raise Problem(403, "forbidden", "Forbidden", f"role {principal.role!r} may not view this page")
    data = context.pop("load")() if "load" in context else {}
    return _render(request, template, {"principal": principal, **context, **data})


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    services = _services(request)
    return _page(
        request,
        "versions.html",
        keys.READ,
        title="Versions",
        load=lambda: {"versions": [v.to_json() for v in services.store.versions()]},
    )


@router.post("/ui/login")
def login(request: Request, key: Annotated[str, Form()]) -> Response:
    if principal_for(request, key.strip()) is None:
        context = {"title": "Sign in", "principal": None, "error": "Unknown or revoked key."}
        return _render(request, "login.html", context, status_code=401)
    response = _redirect("/")
    secure = request.url.scheme == "https" or _services(request).settings.api.secure_cookie
    response.set_cookie(COOKIE_NAME, key.strip(), httponly=True, samesite="strict", path="/", secure=secure)
    return response


@router.get("/ui/logout")
def logout() -> Response:
    response = _redirect("/")
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/ui/versions/{version}", response_class=HTMLResponse)
def version_page(request: Request, version: int) -> Response:
    store = _services(request).store

    def load() -> dict[str, Any]:
        info = store.version(version)
        return {
            "info": info.to_json(),
            "diff": store.diff(info.parent or 0, info.version).to_json(),
            "documents": [d.to_json() for d in store.documents(as_of=info.version)],
        }

    return _page(request, "version.html", keys.READ, title=f"Version {version}", load=load)


@router.get("/ui/documents/{document_id}", response_class=HTMLResponse)
def document_page(request: Request, document_id: int) -> Response:
    store = _services(request).store
    if _signed_in(request) is None:  # before looking the document up: its existence is not public
        return _page(request, "document.html", keys.READ)
    doc = store.document(document_id)
    # A case is a patient record: only roles that may see cases may read it.
    is_case = doc.source_key.startswith("case:")
    needed = _CASE_ROLES if is_case else (keys.READ,)

    def load() -> dict[str, Any]:
        chunks = store.document_chunks(document_id)
        image_ids: list[int] = []
        if is_case:
            services = _services(request)
            found = services.case_store.by_chunk_ids([c["id"] for c in chunks])
            case_ids = sorted({case.case_id for case in found.values()})
            image_ids = [i for ids in services.image_store.ids_by_case(case_ids).values() for i in ids]
        return {"doc": doc.to_json(), "chunks": chunks, "image_ids": image_ids}

    return _page(request, "document.html", *needed, title=doc.title, load=load)


def _png(request: Request, *permissions: str, render: Callable[[], bytes]) -> Response:
    """An image for a page: the same key and roles as the page that shows it (401/403 otherwise)."""
    principal = _signed_in(request)
    if principal is None:
        raise Problem(401, "unauthenticated", "Missing or invalid API key", "sign in on the web page first")
    if not _allows(principal, *permissions):
        raise Problem(403, "forbidden", "Forbidden", f"role {principal.role!r} may not view this image")
    response = Response(render(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
    return with_page_headers(response)


@router.get("/ui/images/{image_id}/preview.png")
def image_preview(request: Request, image_id: int) -> Response:
    """A stored case image's de-identified preview (an image belongs to a case: case roles only)."""
    from kbservice.imaging.preview import preview_png

    services = _services(request)

    def render() -> bytes:
        row = services.image_store.get(image_id)
        return preview_png(services.settings.images_dir / row["stored_path"], services.settings.imaging, max_side=192)

    return _png(request, *_CASE_ROLES, render=render)


@router.get("/ui/recommendations/{recommendation_id}/images/{number}.png")
def request_image(request: Request, recommendation_id: str, number: int) -> Response:
    """Image `number` (from 1) of a stored recommendation's request: the normalised pixels it recorded."""
    from kbservice.imaging.preview import pixels_png
    from kbservice.recommend.answer import show
    from kbservice.types import RequestImage

    def render() -> bytes:
        images = show(_services(request), recommendation_id).request.get("images") or []
        if not 1 <= number <= len(images):
            raise Problem(404, "not-found", "Not found", f"the request has {len(images)} image(s)")
        return pixels_png(RequestImage.from_json(images[number - 1]).pixels, max_side=192)

    return _png(request, keys.AUDIT, render=render)


@router.get("/ui/adapters", response_class=HTMLResponse)
def adapters_page(request: Request) -> Response:
    services = _services(request)

    def load() -> dict[str, Any]:
        adapters = services.registry.list()
        judged = [a for a in adapters if a["metrics"]]
        chart = line_chart(
            {m: [a["metrics"].get(m) for a in judged] for m in _CHART_METRICS},
            [a["version"] for a in judged],
            title="Gate metrics per adapter version (held-out + frozen cases)",
        )
        history = [
            e.to_json() for e in services.audit.store.latest(kinds=("adapter.promote", "adapter.rollback"), limit=200)
        ]
        return {"adapters": adapters, "chart": chart, "history": history, "aliases": champion_and_previous(services)}

    return _page(request, "adapters.html", keys.READ, title="Adapters", load=load)


@router.get("/ui/adapters/{version}", response_class=HTMLResponse)
def adapter_page(request: Request, version: str) -> Response:
    services = _services(request)

    def load() -> dict[str, Any]:
        shown = services.registry.show(version)
        compared = (shown.get("report") or {}).get("metrics") or {}
        groups = {
            name: {m: values[m] for m in _CHART_METRICS if isinstance(values.get(m), int | float)}
            for name, values in compared.items()
            if isinstance(values, dict)
        } or {version: {m: v for m, v in (shown["metrics"] or {}).items() if m in _CHART_METRICS}}
        return {"a": shown, "chart": bar_chart(groups, title=f"{version}: candidate vs champion at its gate")}

    return _page(request, "adapter.html", keys.READ, title=f"Adapter {version}", load=load)


@router.get("/ui/recommendations", response_class=HTMLResponse)
def recommendations_page(request: Request) -> Response:
    services = _services(request)

    def load() -> dict[str, Any]:
        return {"entries": [e.to_json() for e in services.audit.store.latest(kinds=("recommendation",), limit=50)]}

    return _page(request, "recommendations.html", keys.AUDIT, title="Recommendations", load=load)


@router.get("/ui/recommendations/lookup")
def recommendation_lookup(id: str) -> Response:
    return _redirect(f"/ui/recommendations/{id.strip()}")


@router.get("/ui/recommendations/{recommendation_id}", response_class=HTMLResponse)
def recommendation_page(request: Request, recommendation_id: str) -> Response:
    from kbservice.recommend.answer import show

    services = _services(request)
    return _page(
        request,
        "recommendation.html",
        keys.AUDIT,
        title=recommendation_id,
        load=lambda: {"shown": show(services, recommendation_id)},
    )
