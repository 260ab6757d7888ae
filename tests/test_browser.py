"""End-to-end browser journeys against a real daphne site, driven by Playwright and Chromium.

Sign up, get the signup credits, create an API key (shown once), run the built-in model from its
page and watch the result arrive over the job websocket (no page reload), use the key from the
API, revoke it, log out.

Needs /usr/bin/chromium (never `playwright install`): skipped without it, unless
PLAYGROUND_REQUIRE_BROWSER=1, which makes a missing browser an error. Screenshots of each page
go to the test's tmp dir, or to $PLAYGROUND_SCREENSHOT_DIR when set (to look at them).
"""

import json
import re
import secrets
from decimal import Decimal

import httpx
import pytest

from tests.browser import TIMEOUT_MS, require_browser
from tests.fake_openai import FakeOpenAI
from tests.live import start_site

pytestmark = pytest.mark.browser

MODEL = "trigram-pydoc"


@pytest.fixture
def site(tmp_path):
    require_browser()
    live = start_site(tmp_path / "site")
    yield live
    live.stop()


def _balance(page) -> Decimal:
    text = page.locator(".site-header .balance").inner_text()
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?) credits\s*", text)
    assert match, f"header balance reads {text!r}"
    return Decimal(match.group(1))


def _ui_problems(panel) -> list[str]:
    """Visual defects of a finished, successful job panel: checked, but reported at the end so
    the rest of the journey still runs."""
    problems = []
    error = panel.locator("[data-field=error]")
    if error.is_visible():
        problems.append(
            "the job panel shows an (empty) error box on a success: "
            f"hidden={error.get_attribute('hidden')!r} but visible, text={error.inner_text()!r}"
        )
    return problems


def _generate(site, key, **body):
    body = {"model": MODEL, "prompt": "The function", "max_tokens": 16, **body}
    return httpx.post(
        site.base_url + "/v1/generate-text",
        json={**body, "wait_for_result": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_signup_key_run_stream_revoke_logout(site, page, shots):
    from playwright.sync_api import expect

    base = site.base_url
    email = f"e2e-{secrets.token_hex(4)}@example.com"
    password = "Browser-pw-" + secrets.token_hex(6)

    # -- Anonymous catalogue, then sign up from the header link.
    page.goto(base + "/")
    expect(page).to_have_url(base + "/models/")
    expect(page.locator(".site-user")).to_contain_text("Log in")
    expect(page.locator(f'a.card[href="/models/{MODEL}/"]')).to_be_visible()
    shots(page, "catalogue-anonymous")
    page.locator(".site-user").get_by_role("link", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/accounts/signup/"))
    page.locator("input[name=email]").fill(email)
    page.locator("input[name=password1]").fill(password)
    page.locator("input[name=password2]").fill(password)
    shots(page, "signup")
    page.locator("form.form button[type=submit], form.form input[type=submit]").first.click()

    # -- Logged in (verification is optional here), with the signup credits in the header.
    expect(page.locator(".site-user .user-email")).to_have_text(email)
    expect(page.locator(".site-user")).not_to_contain_text("Log in")
    assert _balance(page) == Decimal("10")
    shots(page, "after-signup")

    # -- API keys: create a named key, see it once.
    page.locator(".site-nav").get_by_role("link", name="API keys").click()
    expect(page).to_have_url(base + "/keys/")
    expect(page.get_by_text("No keys yet.")).to_be_visible()
    page.get_by_label("Name").fill("browser key")
    page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#new-key")
    expect(new_key).to_be_visible()
    key = new_key.inner_text().strip()
    assert key.startswith("pgk_") and len(key) > 20, key
    row = page.locator("#keys tbody tr", has_text="browser key")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("active")
    shots(page, "keys-created")

    # A fresh GET of the page never shows the secret again, only its prefix.
    page.goto(base + "/keys/")
    expect(page.locator("#new-key")).to_have_count(0)
    assert key not in page.content()
    row = page.locator("#keys tbody tr", has_text="browser key")
    expect(row).to_have_count(1)
    listed = row.locator("code").inner_text().strip().rstrip("…")
    assert len(listed) >= 8 and key.startswith(listed) and listed != key, (listed, key)
    shots(page, "keys-reloaded")

    # -- Models -> the built-in model -> Run, streamed into the page by htmx + websocket.
    page.locator(".site-nav").get_by_role("link", name="Models").click()
    expect(page).to_have_url(base + "/models/")
    shots(page, "catalogue")
    page.locator(f'a.card[href="/models/{MODEL}/"]').click()
    expect(page).to_have_url(f"{base}/models/{MODEL}/")
    expect(page.locator("#result .empty")).to_be_visible()
    page.locator("#id_prompt").fill("The function")
    page.locator("#id_max_tokens").fill("200")

    frames = []

    def on_websocket(ws):
        if "/ws/jobs/" in ws.url:
            ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_websocket)
    marker = secrets.token_hex(8)
    page.evaluate("marker => { window.__e2eMarker = marker; }", marker)
    with page.expect_response(lambda r: r.url.endswith(f"/models/{MODEL}/run")) as run_info:
        page.get_by_role("button", name="Run").click()
    run_response = run_info.value
    assert run_response.status == 200
    assert run_response.request.headers.get("hx-request") == "true", "Run was not an htmx request"
    panel_html = run_response.text()

    panel = page.locator("#result .job")
    expect(panel).to_have_count(1)
    expect(panel).to_have_attribute("data-status", "success", timeout=TIMEOUT_MS)
    assert page.evaluate("() => window.__e2eMarker") == marker, "the page was reloaded"
    text = panel.locator("[data-field=text]").inner_text()
    assert text.strip(), "no generated text shown"
    expect(panel.locator("[data-field=status]")).to_have_text("success")
    expect(panel.locator("[data-field=cost]")).to_have_text(re.compile(r"^\d+(\.\d+)? credits$"))
    expect(panel.locator("[data-field=tokens]")).to_have_text(re.compile(r"^\d+ in · \d+ out$"))
    expect(panel.locator("[data-field=progress]")).to_have_attribute(
        "style", re.compile(r"width:\s*100%")
    )
    ui_problems = _ui_problems(panel)
    expect(panel.locator("[data-field=text]")).not_to_have_class(re.compile(r"\bstreaming\b"))
    cost = Decimal(panel.locator("[data-field=cost]").inner_text().split()[0])
    assert cost > 0

    # The panel htmx swapped in was a live, empty one: the text came over the websocket.
    assert "data-live" in panel_html
    assert re.search(r'data-field="text">\s*</div>', panel_html), panel_html
    kinds = [frame["type"] for frame in frames]
    assert kinds and kinds[0] == "snapshot", kinds
    final = frames[-1]
    if frames[0]["job"]["status"] in ("pending", "running"):
        # Connected while the job ran: the stream ends with a result document.
        assert final["type"] == "result", kinds
    else:
        # The built-in model can finish before the socket connects: then the snapshot is final.
        assert kinds == ["snapshot"], kinds
    assert final["job"]["status"] == "success"
    assert final["job"]["text"].lstrip() == text
    assert Decimal(final["job"]["cost"]) == cost
    shots(page, "model-after-run")

    # The job page shows the same finished job.
    page.locator("#result .job .job-header a").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    expect(page.locator(".job")).to_have_attribute("data-status", "success")
    assert page.locator(".job [data-field=text]").inner_text() == text
    shots(page, "job-page")

    # After a reload the header balance is the signup credits less the job's cost.
    page.reload()
    assert _balance(page) == Decimal("10") - cost

    # -- The key captured in the browser works against the API...
    response = _generate(site, key)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["status"] == "success" and doc["text"], doc

    # ...until it is revoked on the keys page.
    page.goto(base + "/keys/")
    row = page.locator("#keys tbody tr", has_text="browser key")
    expect(row.locator("td").nth(4)).to_contain_text("now")  # last used: just now
    page.once("dialog", lambda dialog: dialog.accept())  # "Revoke this key?"
    row.get_by_role("button", name="Revoke").click()
    expect(page).to_have_url(base + "/keys/")
    expect(page.locator("#messages")).to_contain_text("is revoked")
    row = page.locator("#keys tbody tr", has_text="browser key")
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    shots(page, "keys-revoked")
    response = _generate(site, key)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"

    # -- Log out from the header.
    page.locator(".site-user").get_by_role("button", name="Log out").click()
    expect(page.locator(".site-user")).to_contain_text("Log in")
    expect(page.locator(".site-user .balance")).to_have_count(0)
    shots(page, "logged-out")

    assert not page.js_errors, page.js_errors
    assert not ui_problems, ui_problems


def test_slow_model_streams_deltas_into_the_page(site, page, shots):
    """A slow upstream model: the page shows partial text while running, then the result."""
    from playwright.sync_api import expect

    fake = FakeOpenAI()
    fake.chunks = ["Once", " upon", " a", " time", ",", " slowly", "."]
    fake.chunk_delay = 0.4
    fake.usage = {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    fake.start()
    try:
        site.manage(
            "models",
            "add-openai",
            "slow-story",
            "--base-url",
            fake.base_url,
            "--upstream-model",
            "fake",
            "--name",
            "Slow story",
            "--per-1k-output",
            "1",
        )
        email = f"slow-{secrets.token_hex(4)}@example.com"
        password = "Browser-pw-" + secrets.token_hex(6)
        site.manage("users", "add", email, "--password", password, "--credits", "5")

        # Log in from the model page's own link and come back to it.
        page.goto(site.base_url + "/models/slow-story/")
        page.locator("#main").get_by_role("link", name="Log in").click()
        page.locator("input[name=login]").fill(email)
        page.locator("input[name=password]").fill(password)
        page.locator("form.form button[type=submit]").first.click()
        expect(page).to_have_url(site.base_url + "/models/slow-story/")
        assert _balance(page) == Decimal("5")

        frames = []

        def on_websocket(ws):
            if "/ws/jobs/" in ws.url:
                ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

        page.on("websocket", on_websocket)
        marker = secrets.token_hex(8)
        page.evaluate("marker => { window.__e2eMarker = marker; }", marker)
        prompt = page.locator("#id_prompt, #id_messages").first
        if prompt.get_attribute("id") == "id_messages":
            prompt.fill('[{"role": "user", "content": "Tell me a story"}]')
        else:
            prompt.fill("Tell me a story")
        page.get_by_role("button", name="Run").click()

        panel = page.locator("#result .job")
        output = panel.locator("[data-field=text]")
        # Partial text while the job is still running: it is streaming in, delta by delta.
        expect(output).to_contain_text("Once upon")
        assert panel.get_attribute("data-status") == "running"
        expect(output).to_have_class(re.compile(r"\bstreaming\b"))
        shots(page, "slow-model-streaming")
        expect(panel).to_have_attribute("data-status", "success")
        expect(output).to_have_text("Once upon a time, slowly.")
        expect(output).not_to_have_class(re.compile(r"\bstreaming\b"))
        expect(panel.locator("[data-field=tokens]")).to_have_text("3 in · 7 out")
        assert page.evaluate("() => window.__e2eMarker") == marker, "the page was reloaded"
        ui_problems = _ui_problems(panel)
        shots(page, "slow-model-done")

        kinds = [frame["type"] for frame in frames]
        assert kinds[0] == "snapshot" and kinds[-1] == "result", kinds
        assert kinds.count("delta") >= 3, kinds
        streamed = "".join(frame["text"] for frame in frames if frame["type"] == "delta")
        snapshot_text = frames[0]["job"].get("text") or ""
        assert snapshot_text + streamed == "Once upon a time, slowly.", (snapshot_text, streamed)
        assert frames[-1]["job"]["text"] == "Once upon a time, slowly."
        # 7 output tokens at 1 credit per 1K.
        page.reload()
        assert _balance(page) == Decimal("5") - Decimal("0.007")
        assert not page.js_errors, page.js_errors
        assert not ui_problems, ui_problems
    finally:
        fake.close()
