"""BodyLimit: a body over api.max_upload_mb is refused while it streams in, through FastAPI's own body
reading and through the multipart form parser alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request

from kbservice.api import problems
from kbservice.api.body_limit import BodyLimit

CHUNK = 1000


def _app(limit: int) -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.post("/raw")
    async def raw(request: Request) -> dict:
        return {"read": len(await request.body())}

    @app.post("/form")
    async def form(request: Request) -> dict:
        async with request.form() as parsed:
            return {"parts": len(parsed)}

    app.add_middleware(BodyLimit, limit_bytes=limit)
    return app


def _post(path: str, chunks: int, headers: dict[str, str]) -> tuple[httpx.Response, int]:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        if "multipart" in headers["content-type"]:  # one file part that never ends
            yield b'--b\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\n'
        for _ in range(chunks):
            sent += 1
            yield b"x" * CHUNK

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(5 * CHUNK))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, content=body(), headers=headers)

    return asyncio.run(run()), sent


def test_a_streamed_body_is_cut_at_the_limit_without_reading_the_rest() -> None:
    for path, content_type in (("/raw", "application/json"), ("/form", "multipart/form-data; boundary=b")):
        response, sent = _post(path, 100, {"content-type": content_type})
        assert response.status_code == 413, response.text
        assert response.json()["type"].endswith("/too-large")
        assert sent <= 6, f"{path}: {sent} chunks of {CHUNK} bytes were read for a {5 * CHUNK}-byte limit"


def test_a_body_within_the_limit_passes_untouched() -> None:
    response, sent = _post("/raw", 5, {"content-type": "application/json"})
    assert response.status_code == 200 and response.json() == {"read": 5 * CHUNK} and sent == 5
