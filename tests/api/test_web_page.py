"""The auditors' web page in a real headless Chromium (Debian's `chromium`, driven by Playwright): sign in
with a key, walk version -> diff -> document, adapter -> metrics chart, recommendation -> cited passage.
Screenshots go to test-artifacts/web/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import LiveServer
from tests.conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts" / "web"


@pytest.fixture(scope="module")
def audited(live: LiveServer) -> dict[str, str]:
    """An adapter judged by the gate and a recommendation to audit."""
    from kbservice.learn.scheduler import run_once_with_lease

    services = live.services
    services.settings.learn.min_new_cases = 5
    report = run_once_with_lease(services, holder="web-test")
    assert report.adapter_version, report
    with live.client("clinician") as client:
        answer = client.post(
            "/v1/recommendations", json={"findings": "Wheeze and night cough; FEV1 up 15% after salbutamol."}
        )
    assert answer.status_code == 200, answer.text
    return {"adapter": report.adapter_version, "recommendation": answer.json()["id"]}


def shot(page, name: str, database: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{database}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def test_auditor_walks_versions_adapters_and_provenance(
    live: LiveServer,
    browser,
    audited: dict[str, str],
    request: pytest.FixtureRequest,  # type: ignore[no-untyped-def]
) -> None:
    database = "postgresql" if "postgresql" in request.node.callspec.id else "sqlite"
    page = browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(live.url + "/")
    assert page.title().startswith("Sign in")
    page.fill("#key", "kb_wrong")
    page.click("#sign-in")
    assert "Unknown or revoked key" in page.content()
    page.fill("#key", live.keys["auditor"])
    page.click("#sign-in")

    # A version, its diff, a document it added.
    page.click("#version-1")
    assert page.locator("h1").inner_text() == "Version 1"
    added = page.locator("#diff li.added a")
    assert added.count() == 8
    shot(page, "version", database)
    # The filter's script runs under the page's Content-Security-Policy (nonce), and nothing was blocked.
    rows = page.locator("#documents tr:not(:first-child)")
    assert rows.count() == 8
    page.fill("#filter", "no such title")
    assert page.locator("#documents tr:not(:first-child):visible").count() == 0
    page.fill("#filter", "")
    assert page.locator("#documents tr:not(:first-child):visible").count() == 8
    assert not [m for m in console if "Content Security Policy" in m], console
    title = added.first.inner_text()
    added.first.click()
    assert page.locator("h1").inner_text() == title
    assert page.locator(".passage").count() >= 1
    shot(page, "document", database)

    # An adapter and its metrics chart.
    page.click("text=Adapters")
    page.click(f"#adapters a:text-is('{audited['adapter']}')")
    chart = page.locator("#metrics-chart svg")
    chart.wait_for(state="visible")
    assert chart.locator("rect").count() >= 2
    shot(page, "adapter", database)

    # A recommendation's provenance and one cited passage in its document.
    page.click("text=Recommendations")
    page.click(f"#recommendations a:text-is('{audited['recommendation']}')")
    assert page.locator("h1").inner_text() == audited["recommendation"]
    assert page.locator("#provenance").inner_text().count("knowledge_version") == 1
    shot(page, "recommendation", database)
    link = page.locator("a.passage-link").first
    chunk = link.get_attribute("href").split("#chunk-")[1]
    link.click()
    cited = page.locator(f"#chunk-{chunk}")
    cited.wait_for(state="visible")  # the click starts a navigation; is_visible() alone does not wait for it
    assert cited.evaluate("element => element.matches(':target')")
    shot(page, "cited-passage", database)
    page.close()


def test_a_reader_cannot_open_provenance(live: LiveServer, browser, audited: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    page.goto(live.url + "/")
    page.fill("#key", live.keys["reader"])
    page.click("#sign-in")
    response = page.goto(f"{live.url}/ui/recommendations/{audited['recommendation']}")
    assert response.status == 403
    context.close()


def test_pages_forbid_framing_sniffing_and_foreign_scripts_and_cookies_are_secure_over_https(
    live: LiveServer,
) -> None:
    # Issue 15, defect 6: no Content-Security-Policy, X-Frame-Options or X-Content-Type-Options, and the
    # session cookie lacked Secure when served over HTTPS.
    import re

    import httpx

    with httpx.Client(base_url=live.url) as client:
        sign_in = client.get("/")
        csp = sign_in.headers["content-security-policy"]
        nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)  # type: ignore[union-attr]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "form-action 'self'" in csp
        assert f'nonce="{nonce}"' in sign_in.text and "unsafe-inline" not in csp
        assert sign_in.headers["x-frame-options"] == "DENY" and sign_in.headers["x-content-type-options"] == "nosniff"
        assert client.get("/").headers["content-security-policy"] != csp  # a fresh nonce per response

        key = {"key": live.keys["auditor"]}
        plain = client.post("/ui/login", data=key, follow_redirects=False)
        assert plain.status_code == 303 and "secure" not in plain.headers["set-cookie"].lower()
        assert plain.headers["x-frame-options"] == "DENY"
        # Over HTTPS (a TLS-terminating proxy on this host says so, and uvicorn trusts it): Secure.
        https = client.post("/ui/login", data=key, headers={"X-Forwarded-Proto": "https"}, follow_redirects=False)
        assert "; secure" in https.headers["set-cookie"].lower()
        live.services.settings.api.secure_cookie = True  # or configured so, whatever the scheme
        try:
            configured = client.post("/ui/login", data=key, follow_redirects=False)
        finally:
            live.services.settings.api.secure_cookie = False
        assert "; secure" in configured.headers["set-cookie"].lower()
