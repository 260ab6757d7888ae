"""The playground pages in Chromium against one live daphne site: every page at desktop and phone
width (screenshots in test-results/screenshots/), axe-core with no serious or critical violation,
no console error; and the flows: live preview and run, chat streaming and stop, compare, re-run,
share link logged out, the docs page's examples run for real, the dashboard's live list.
"""

import json
import os
import re
import secrets
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, require_browser
from tests.fake_openai import FakeOpenAI
from tests.live import ROOT, start_site

pytestmark = pytest.mark.browser

MODEL = "trigram-pydoc"
SHOTS = Path(os.environ.get("PLAYGROUND_SCREENSHOT_DIR") or ROOT / "test-results" / "screenshots")
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 900}
# The dark scheme's colours are checked (axe's contrast rule) on the pages with most kinds of
# elements; every page is checked in light at both widths.
DARK_CHECKED = ("dashboard", "model", "chat", "docs", "job")


@pytest.fixture(scope="module")
def fake():
    upstream = FakeOpenAI()
    upstream.chunks = ["Once", " upon", " a", " time", ",", " slowly", "."]
    upstream.chunk_delay = 0.25
    upstream.usage = {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    upstream.start()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, fake):
    require_browser()
    live = start_site(tmp_path_factory.mktemp("pages-site"))
    live.manage(
        "models", "add-openai", "slow-story", "--base-url", fake.base_url,
        "--upstream-model", "fake", "--per-1k-output", "1",
    )  # fmt: skip
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def account(site):
    """(email, password, api key) of a user with 50 credits."""
    email = f"pages-{secrets.token_hex(4)}@example.com"
    password = "Pages-pw-" + secrets.token_hex(6)
    site.manage("users", "add", email, "--password", password, "--credits", "50")
    key = site.manage("apikey", "create", email, "--tier", "unlimited").stdout.strip()
    return email, password, key


def new_page(browser, viewport=DESKTOP, scheme="light"):
    context = browser.new_context(viewport=viewport, color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.on("console", lambda m: page.js_errors.append(m.text) if m.type == "error" else None)
    return page


def log_in(page, site, account):
    email, password, _ = account
    page.goto(site.base_url + "/accounts/login/")
    page.locator("input[name=login]").fill(email)
    page.locator("input[name=password]").fill(password)
    page.locator("form.form button[type=submit]").first.click()
    page.wait_for_url(site.base_url + "/")


@pytest.fixture
def page(browser, site, account):
    page = new_page(browser)
    log_in(page, site, account)
    yield page
    assert not page.js_errors, page.js_errors
    page.context.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


def axe_problems(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def api(site, key, path, body):
    return httpx.post(
        site.base_url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def finished_job(site, key) -> str:
    body = {"model": MODEL, "prompt": "The class", "max_tokens": 24, "wait_for_result": True}
    doc = api(site, key, "/v1/generate-text", body).json()
    assert doc["status"] == "success", doc
    return doc["request_id"]


def test_every_page_at_desktop_and_phone_width_is_accessible(browser, site, account):
    from playwright.sync_api import expect

    request_id = finished_job(site, account[2])
    pages = {
        "dashboard": "/",
        "catalogue": "/models/",
        "model": f"/models/{MODEL}/",
        "model-embedding": "/models/hash-embed/",
        "chat": f"/models/{MODEL}/chat",
        "docs": f"/models/{MODEL}/docs",
        "compare": "/compare/",
        "jobs": "/jobs/",
        "job": f"/jobs/{request_id}/",
    }
    problems = {}
    for scheme, viewport, suffix in (
        ("light", DESKTOP, "desktop"),
        ("light", PHONE, "phone"),
        ("dark", DESKTOP, "dark"),
    ):
        page = new_page(browser, viewport, scheme)
        log_in(page, site, account)
        for name, path in pages.items():
            if scheme == "dark" and name not in DARK_CHECKED:
                continue
            page.goto(site.base_url + path)
            expect(page.locator("main h1")).to_be_visible()
            page.wait_for_load_state("networkidle")
            shot(page, f"{name}-{suffix}")
            found = axe_problems(page)
            if found:
                problems[f"{name} {suffix}"] = found
            if viewport is PHONE:
                width = page.evaluate("() => document.documentElement.scrollWidth")
                if width > PHONE["width"]:
                    problems[f"{name} phone"] = [f"page is {width}px wide at 375px"]
        assert not page.js_errors, page.js_errors
        page.context.close()
    visitor = new_page(browser, PHONE)
    for name, path in (("catalogue", "/models/"), ("model", f"/models/{MODEL}/")):
        visitor.goto(site.base_url + path)
        visitor.wait_for_load_state("networkidle")
        shot(visitor, f"{name}-logged-out-phone")
        found = axe_problems(visitor)
        if found:
            problems[f"{name} logged out"] = found
    assert not visitor.js_errors, visitor.js_errors
    visitor.context.close()
    assert not problems, json.dumps(problems, indent=1)


def test_catalogue_search_and_filters_update_in_place(page, site):
    from playwright.sync_api import expect

    page.goto(site.base_url + "/models/")
    marker = secrets.token_hex(4)
    page.evaluate("m => { window.__marker = m; }", marker)
    cards = page.locator("#cards a.card")
    from playground.catalogue import BUILTIN

    expect(cards).to_have_count(len(BUILTIN) + 1)  # and the operator's upstream model
    page.get_by_label("Search").fill("hash")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("0.001 credits / 1K input tokens")
    page.get_by_label("Search").fill("")
    page.get_by_label("Modality").select_option("text")
    expect(cards).to_have_count(2)
    page.get_by_label("Price").select_option("0.1")
    expect(cards).to_have_count(1)
    expect(page).to_have_url(re.compile(r"modality=text.*price=0\.1"))
    assert page.evaluate("() => window.__marker") == marker, "the page was reloaded"


def test_keyboard_focus_is_visible_on_the_model_page(page, site):
    page.goto(site.base_url + f"/models/{MODEL}/")
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("() => document.activeElement.className") == "skip-link"
    page.locator("#id_prompt").focus()
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return s.boxShadow + ' ' + s.outlineStyle; }"
    )
    assert outline != "none none", outline


def test_model_page_preview_validation_dice_and_a_run_to_done(page, site):
    from playwright.sync_api import expect

    page.goto(site.base_url + f"/models/{MODEL}/")
    estimate = page.locator("#estimate [data-field=estimate]")
    before = Decimal(estimate.inner_text())
    page.locator("#id_max_tokens").fill("900")
    expect(estimate).not_to_have_text(str(before))
    assert Decimal(estimate.inner_text()) > before
    expect(page.locator("#code-curl")).to_contain_text('"max_tokens": 900')
    # The slider follows the number box, and the value shown beside the label too.
    assert page.locator("[data-range-for=max_tokens]").input_value() == "900"
    page.locator("#id_max_tokens").fill("5000")
    expect(page.locator("#err-max_tokens")).to_contain_text("less than or equal to 1024")
    page.locator("#id_max_tokens").fill("40")
    expect(page.locator("#err-max_tokens")).to_have_text("")
    page.locator("details.advanced summary").click()
    page.locator("[data-dice=id_seed]").click()
    seed = page.locator("#id_seed").input_value()
    assert seed.isdigit()
    expect(page.locator("#code-curl")).to_contain_text(f'"seed": {seed}')
    page.locator("[data-code-tab=python]").click()
    expect(page.locator("#code-python")).to_be_visible()
    expect(page.locator("#code-python")).to_contain_text(f'"seed": {seed}')

    frames = []
    page.on(
        "websocket",
        lambda ws: (
            ws.on("framereceived", lambda p: frames.append(json.loads(p)))
            if "/ws/jobs/" in ws.url
            else None
        ),
    )
    page.get_by_role("button", name="Run").click()
    panel = page.locator("#result .job")
    expect(panel).to_have_attribute("data-status", "success")
    expect(panel.locator("[data-field=progressbar]")).to_have_attribute("aria-valuenow", "100")
    expect(panel.locator("[data-field=progress]")).to_have_attribute(
        "style", re.compile(r"width:\s*100%")
    )
    assert panel.locator("[data-field=text]").inner_text().strip()
    shot(page, "flow-model-run")


def test_chat_streams_tokens_shows_usage_and_stops(page, site, fake):
    from playwright.sync_api import expect

    page.goto(site.base_url + "/models/slow-story/chat")
    page.locator("#chat-system").fill("You tell stories.")
    page.locator("#chat-message").fill("Tell me a story")
    page.locator("#chat-message").press("Enter")
    reply = page.locator(".chat-assistant").last
    # Partial text while the job runs: tokens streaming in.
    expect(reply.locator(".chat-text")).to_contain_text("Once upon")
    assert "streaming" in reply.locator(".chat-text").get_attribute("class")
    expect(reply.locator(".chat-meta")).to_contain_text("3 in · 7 out · 0.007 credits")
    expect(reply.locator(".chat-text")).to_have_text("Once upon a time, slowly.")
    sent = fake.requests[-1].json["messages"]
    assert sent[0] == {"role": "system", "content": "You tell stories."}

    # A second turn carries the conversation; Stop cancels it mid-stream.
    page.locator("#chat-message").fill("Again")
    page.get_by_role("button", name="Send").click()
    second = page.locator(".chat-assistant").nth(1)
    expect(second.locator(".chat-text")).to_contain_text("Once")
    page.get_by_role("button", name="Stop").click()
    expect(second).to_have_attribute("data-status", "canceled")
    expect(second.locator(".chat-meta")).to_contain_text("stopped")
    sent = fake.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    shot(page, "flow-chat")
    page.get_by_role("button", name="Clear").click()
    expect(page.locator(".chat-msg")).to_have_count(0)


def test_compare_two_models_side_by_side(page, site):
    from playwright.sync_api import expect

    page.goto(site.base_url + "/compare/?modality=text")
    page.locator("input[name=models][value=trigram-pydoc]").check()
    page.locator("input[name=models][value=slow-story]").check()
    page.locator("#id_prompt").fill("Compare this")
    page.get_by_role("button", name="Run on all").click()
    expect(page.locator("#columns .job")).to_have_count(2)
    slow = page.locator("#columns .column", has_text="slow-story").locator(".job")
    builtin = page.locator("#columns .column", has_text=MODEL).locator(".job")
    # Both live at once: the slow one is still streaming when the built-in one is done.
    expect(builtin).to_have_attribute("data-status", "success")
    expect(slow.locator("[data-field=text]")).to_contain_text("Once")
    expect(slow).to_have_attribute("data-status", "success")
    expect(slow.locator("[data-field=text]")).to_have_text("Once upon a time, slowly.")
    shot(page, "flow-compare")


def test_rerun_and_share_link_for_logged_out_visitors(page, browser, site, account):
    from playwright.sync_api import expect

    request_id = finished_job(site, account[2])
    page.goto(site.base_url + f"/jobs/{request_id}/")
    page.get_by_role("link", name="Edit and re-run").click()
    expect(page.locator("#id_prompt")).to_have_value("The class")
    expect(page.locator("#id_max_tokens")).to_have_value("24")
    page.goto(site.base_url + f"/jobs/{request_id}/")
    page.get_by_role("button", name="Run again").click()
    expect(page).not_to_have_url(re.compile(request_id))
    expect(page.locator(".job")).to_have_attribute("data-status", "success")

    page.goto(site.base_url + f"/jobs/{request_id}/")
    page.get_by_role("button", name="Create share link").click()
    url = page.locator("#share-url").inner_text()
    visitor = new_page(browser, PHONE)
    visitor.goto(url)
    expect(visitor.locator(".job")).to_have_attribute("data-status", "success")
    expect(visitor.locator(".site-user")).to_contain_text("Log in")
    assert account[0] not in visitor.content()
    shot(visitor, "shared-phone")
    assert not axe_problems(visitor)
    page.get_by_role("button", name="Revoke link").click()
    assert visitor.goto(url).status == 404
    visitor.context.close()


def test_docs_page_examples_run_for_real_with_a_key(page, site, account):
    key = account[2]
    page.goto(site.base_url + f"/models/{MODEL}/docs")
    curl = page.locator("#code-curl pre").inner_text()
    python = page.locator("#code-python pre").inner_text()
    assert "$PLAYGROUND_API_KEY" in curl and key not in page.content()
    env = {**os.environ, "PLAYGROUND_API_KEY": key}
    out = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=60)
    doc = json.loads(out.stdout)
    assert doc["status"] == "success" and doc["model"] == MODEL and doc["text"], out
    shown = json.loads(page.locator("#example-response").inner_text())
    assert doc["text"] == shown["text"]  # the example response is this model's real output
    py = subprocess.run(
        [os.sys.executable, "-c", python], env=env, capture_output=True, text=True, timeout=60
    )
    assert py.returncode == 0 and "'status': 'success'" in py.stdout, py.stderr

    page.goto(site.base_url + "/models/hash-embed/docs")
    curl = page.locator("#code-curl pre").inner_text()
    out = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["data"][0]["object"] == "embedding", out


def test_dashboard_update_arriving_during_a_reload_is_not_lost(page, site, account):
    # A job's "running" and "success" come a few ms apart: the list is still loading for the
    # first when the second arrives. That second load must still happen, or the dashboard
    # keeps showing "running".
    loads = []

    def slow(route):
        loads.append(route.request.url)
        time.sleep(0.3)
        route.continue_()

    page.route("**/dashboard/recent", slow)
    page.goto(site.base_url + "/")
    page.wait_for_function("() => window.__userSocket && window.__userSocket.readyState === 1")
    page.evaluate("""() => {
        const fire = s => document.body.dispatchEvent(new CustomEvent("user-job", {detail: s}));
        fire("running"); setTimeout(() => fire("success"), 50);
    }""")
    page.wait_for_timeout(1500)
    assert len(loads) == 2, loads
    page.unroute("**/dashboard/recent")


def test_dashboard_lists_jobs_live(page, site, account):
    from playwright.sync_api import expect

    page.goto(site.base_url + "/")
    marker = secrets.token_hex(4)
    page.evaluate("m => { window.__marker = m; }", marker)
    page.wait_for_function("() => window.__userSocket && window.__userSocket.readyState === 1")
    before = page.locator("#recent li").count()
    api(site, account[2], "/v1/generate-text", {"model": "hash-embed"})  # refused: wrong modality
    finished_job(site, account[2])
    expect(page.locator("#recent li")).to_have_count(min(before + 1, 8))
    expect(page.locator("#recent li").first).to_contain_text("success")
    assert page.evaluate("() => window.__marker") == marker, "the page was reloaded"


def _wav_data_uri() -> str:
    import base64
    import struct

    samples = b"\x00\x00" * 800  # 0.1 s of silence, 8 kHz mono 16-bit
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    return (
        "data:audio/wav;base64,"
        + base64.b64encode(header + b"data" + struct.pack("<I", len(samples)) + samples).decode()
    )


PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAE"
    "hQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_media_job_progress_bar_reaches_100_and_result_shows_in_place(page, site, account):
    """The media backends live on another branch: a job's socket is played by the test
    (CONTRACT §7 messages), the page renders progress and the image/audio/video result."""
    from playwright.sync_api import expect

    hanging = FakeOpenAI()
    hanging.mode = "hang"
    hanging.start()
    request_id = None
    try:
        site.manage("models", "add-openai", "hanging", "--base-url", hanging.base_url)
        doc = api(site, account[2], "/v1/generate-text", {"model": "hanging", "prompt": "x"})
        request_id = doc.json()["request_id"]
        audio = _wav_data_uri()
        result = {
            "request_id": request_id,
            "model": "hanging",
            "status": "success",
            "progress": 1,
            "cost": "0.5",
            "images": [{"url": PIXEL}],
            "audio_url": audio,
            "video": {"url": audio},
        }
        steps = []
        snapshot = {"request_id": request_id, "model": "hanging", "status": "running",
                    "progress": 0}  # fmt: skip

        def play_clean(ws):
            ws.send(json.dumps({"type": "snapshot", "job": snapshot}))
            steps.append(ws)

        page.route_web_socket(re.compile(r".*/ws/jobs/.*"), play_clean)
        page.goto(site.base_url + f"/jobs/{request_id}/")
        panel = page.locator(".job")
        expect(panel).to_have_attribute("data-status", "running")
        ws = steps[0]
        ws.send(json.dumps({"type": "progress", "progress": 0.4}))
        expect(panel.locator("[data-field=progressbar]")).to_have_attribute("aria-valuenow", "40")
        ws.send(json.dumps({"type": "log", "message": "step 20 of 50"}))
        expect(page.locator(".event-log")).to_contain_text("log: step 20 of 50")
        ws.send(json.dumps({"type": "progress", "progress": 1}))
        ws.send(json.dumps({"type": "result", "job": result}))
        expect(panel).to_have_attribute("data-status", "success")
        expect(panel.locator("[data-field=progressbar]")).to_have_attribute("aria-valuenow", "100")
        expect(panel.locator(".media img")).to_have_attribute("src", PIXEL)
        expect(panel.locator(".media audio")).to_have_attribute("src", audio)
        expect(panel.locator(".media video")).to_have_count(1)
        expect(panel.locator(".media a[download]")).to_have_count(3)
        expect(panel.locator("[data-field=text]")).to_be_hidden()
        expect(panel.locator("[data-field=cost]")).to_have_text("0.5 credits")
        shot(page, "flow-media-result")
    finally:
        if request_id:
            httpx.post(
                site.base_url + f"/v1/requests/{request_id}/cancel",
                headers={"Authorization": f"Bearer {account[2]}"},
            )
        hanging.close()
