"""Playwright in Debian's Chromium for the browser tests: the skip rule and the fixtures.

Needs /usr/bin/chromium (never `playwright install`): tests skip without it, unless
PLAYGROUND_REQUIRE_BROWSER=1 makes a missing browser an error. Screenshots go to the test's tmp
dir, or to $PLAYGROUND_SCREENSHOT_DIR when set (to look at them).
"""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


def require_browser():
    """Skip (or, with PLAYGROUND_REQUIRE_BROWSER=1, fail) when Chromium or Playwright is missing."""
    problem = None
    if not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright Python package is not installed (pip install -e .[dev])"
    if problem is None:
        return
    if os.environ.get("PLAYGROUND_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required (PLAYGROUND_REQUIRE_BROWSER=1) but {problem}")
    pytest.skip(problem)


@pytest.fixture
def page(tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: errors.append(msg.text) if msg.type == "error" else None,
        )
        page.js_errors = errors
        try:
            yield page
        finally:
            context.close()
            browser.close()


@pytest.fixture
def shots(tmp_path, request):
    """shots(page, name): a full-page screenshot, <test>/NN-name.png."""
    root = os.environ.get("PLAYGROUND_SCREENSHOT_DIR") or tmp_path / "screenshots"
    folder = Path(root, request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    count = [0]

    def take(page, name):
        count[0] += 1
        # From the top, or the sticky header lands mid-page in a full-page shot.
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(
            path=str(folder / f"{count[0]:02d}-{name}.png"), full_page=True, animations="disabled"
        )

    return take
