"""End-to-end browser journey of an account's security, driven by Playwright and Chromium.

With mandatory email verification: sign up, read the verification link from the console email in
daphne's log and confirm it (the signup credits arrive only then), turn on two-factor
authentication with an authenticator app (TOTP, codes computed here per RFC 6238), save the
recovery codes, log out and back in through the TOTP step (a wrong code is refused), create an
API key, rotate it "at once" on its page and check with httpx that only the new secret works.
Then login throttling: after 6 wrong passwords even the right one is refused for a while.

Needs /usr/bin/chromium (never `playwright install`): skipped without it, unless
PLAYGROUND_REQUIRE_BROWSER=1, which makes a missing browser an error. Screenshots of each page
go to the test's tmp dir, or to $PLAYGROUND_SCREENSHOT_DIR when set (to look at them).
"""

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.browser import TIMEOUT_MS, require_browser
from tests.live import start_site

pytestmark = pytest.mark.browser

CONFIRM_LINK = re.compile(r"https?://[^\s/]+(/accounts/confirm-email/[^\s/]+/)")


@pytest.fixture
def site(tmp_path):
    require_browser()
    live = start_site(tmp_path / "site", extra_env={"PLAYGROUND_EMAIL_VERIFICATION": "mandatory"})
    yield live
    live.stop()


# -- RFC 6238 (TOTP: HMAC-SHA1, 30 s step, 6 digits), written here so the site is not trusted.


def totp(secret: str, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    key = base64.b32decode(secret.strip().upper() + "=" * (-len(secret.strip()) % 8))
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**digits:0{digits}d}"


def fresh_totp(secret: str, margin: float = 3.0) -> str:
    """The current code, with at least `margin` seconds of its 30 s window left (the site
    accepts only the current window)."""
    left = 30 - time.time() % 30
    if left < margin:
        time.sleep(left + 0.05)
    return totp(secret)


def test_totp_helper_matches_rfc6238_vectors():
    # RFC 6238 appendix B, SHA-1 seed "12345678901234567890"; the last 6 of its 8 digits.
    seed = base64.b32encode(b"12345678901234567890").decode()
    assert totp(seed, at=59) == "287082"
    assert totp(seed, at=1111111109) == "081804"
    assert totp(seed, at=1234567890) == "005924"
    assert totp(seed, at=2000000000) == "279037"


# -- Helpers


def _balance(page) -> Decimal:
    text = page.locator(".site-header .balance").inner_text()
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?) credits\s*", text)
    assert match, f"header balance reads {text!r}"
    return Decimal(match.group(1))


def _db_balance(site, email) -> str:
    """The user's ledger balance, read from the database by a manage.py shell."""
    code = (
        "from accounts.models import User; from billing import ledger; "
        f"print(ledger.fmt(ledger.balances(User.objects.get(email={email!r}))[0]))"
    )
    return site.manage("shell", "-c", code).stdout.strip().splitlines()[-1]


def _confirmation_link(site, email, timeout=10.0) -> str:
    """The verification link of the console email to `email`, polled from daphne's log."""
    deadline = time.monotonic() + timeout
    while True:
        log = site.log("daphne")
        # The console backend prints whole messages: split at their Subject headers, newest first.
        for message in reversed(log.split("\nSubject: ")):
            if email in message:
                match = CONFIRM_LINK.search(message)
                if match:
                    return match.group(1)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no verification email to {email} in daphne's log:\n{log[-3000:]}"
            )
        time.sleep(0.1)


def _submit(page):
    page.locator("main form.form button[type=submit]").first.click()


def _reauthenticate_if_asked(page, password, shots=None) -> bool:
    """Type the password where allauth asks to confirm it (sudo mode), as a person would."""
    page.wait_for_load_state()
    if "/accounts/reauthenticate/" not in page.url:
        return False
    if shots:
        shots(page, "reauthenticate")
    page.locator("input[name=password]").fill(password)
    _submit(page)
    page.wait_for_load_state()
    return True


def _log_in(page, base, email, password):
    page.goto(base + "/accounts/login/")
    page.locator("input[name=login]").fill(email)
    page.locator("input[name=password]").fill(password)
    _submit(page)
    page.wait_for_load_state()


def _profile(site, key):
    return httpx.get(
        site.base_url + "/v1/user/profile",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_verify_totp_login_rotate_key_and_login_throttle(site, page, shots):
    from playwright.sync_api import expect

    base = site.base_url
    email = f"acct-{secrets.token_hex(4)}@example.com"
    password = "Browser-pw-" + secrets.token_hex(6)
    sudo_prompts = []  # password prompts right after a fresh login, where the site says none

    # -- Sign up: with mandatory verification, no login and no credits yet.
    page.goto(base + "/accounts/signup/")
    page.locator("input[name=email]").fill(email)
    page.locator("input[name=password1]").fill(password)
    page.locator("input[name=password2]").fill(password)
    shots(page, "signup")
    _submit(page)
    expect(page).to_have_url(re.compile(r"/accounts/confirm-email/$"))
    expect(page.locator("main")).to_contain_text(re.compile(r"verif", re.I))
    expect(page.locator(".site-user")).to_contain_text("Log in")
    expect(page.locator(".site-header .balance")).to_have_count(0)
    shots(page, "verification-sent")
    assert Decimal(_db_balance(site, email)) == 0, "credits granted before verification"

    # -- The verification email, printed by the console backend into daphne's log.
    link = _confirmation_link(site, email)
    page.goto(base + link)
    expect(page.locator("main")).to_contain_text(email)
    shots(page, "verify-confirm")
    _submit(page)
    page.wait_for_load_state()
    shots(page, "verified")
    if page.locator(".site-user .user-email").count() == 0:
        # Not logged in on confirmation: log in with the now verified address.
        _log_in(page, base, email, password)
    expect(page.locator(".site-user .user-email")).to_have_text(email)
    assert _balance(page) == Decimal("10")
    assert Decimal(_db_balance(site, email)) == 10

    # -- Account -> Two-factor authentication -> authenticator app.
    page.locator(".site-user .user-email").click()
    expect(page).to_have_url(base + "/account/")
    expect(page.locator("main h1")).to_have_text("Account")
    expect(page.locator("main")).to_contain_text(email)
    shots(page, "account")
    page.locator("main a.card", has_text="Two-factor authentication").click()
    expect(page).to_have_url(re.compile(r"/accounts/2fa/$"))
    expect(page.locator("main")).to_contain_text("An authenticator app is not active.")
    shots(page, "mfa-index")
    page.locator("main .panel", has_text="Authenticator App").get_by_role(
        "link", name="Activate"
    ).click()
    # allauth's own check: it asks for the password even right after a login (reported).
    _reauthenticate_if_asked(page, password, shots)
    expect(page).to_have_url(re.compile(r"/accounts/2fa/totp/activate/$"))
    expect(page.locator("main img.qr")).to_be_visible()
    secret = page.locator("#authenticator_secret").input_value().strip()
    assert re.fullmatch(r"[A-Z2-7]{16,}=*", secret), f"the shown secret reads {secret!r}"
    shots(page, "mfa-setup")

    # A wrong code first: refused, with a message, on the same page.
    code = fresh_totp(secret)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    page.locator("input[name=code]").fill(wrong)
    _submit(page)
    expect(page.locator("main")).to_contain_text("Incorrect code.")
    assert page.locator("#authenticator_secret").input_value().strip() == secret, (
        "a failed activation showed a different secret"
    )
    shots(page, "mfa-setup-wrong-code")
    page.locator("input[name=code]").fill(fresh_totp(secret))
    _submit(page)

    # -- Recovery codes, generated with the authenticator: view them and download them.
    expect(page).to_have_url(re.compile(r"/accounts/2fa/recovery-codes/$"))
    codes_box = page.locator("#recovery_codes")
    expect(codes_box).to_be_visible()
    codes = codes_box.input_value().split()
    assert len(codes) == 10 and len(set(codes)) == 10, codes
    assert all(re.fullmatch(r"[0-9A-Za-z]{6,}", c) for c in codes), codes
    shots(page, "recovery-codes")
    with page.expect_download() as download_info:
        page.locator("main").get_by_role("link", name="Download codes").click()
    saved = Path(download_info.value.path()).read_text()
    assert all(c in saved for c in codes), saved
    page.goto(base + "/accounts/2fa/")
    expect(page.locator("main")).to_contain_text(
        "Authentication using an authenticator app is active."
    )
    expect(page.locator("main")).to_contain_text("There are 10 out of 10 recovery codes available.")
    shots(page, "mfa-index-active")

    # -- Log out; the password alone no longer logs in: the TOTP step comes.
    page.locator(".site-user").get_by_role("button", name="Log out").click()
    expect(page.locator(".site-user")).to_contain_text("Log in")
    _log_in(page, base, email, password)
    expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/$"))
    expect(page.locator(".site-user")).to_contain_text("Log in")
    expect(page.locator(".site-header .balance")).to_have_count(0)
    shots(page, "totp-login-step")
    code = fresh_totp(secret)
    page.locator("input[name=code]").fill(f"{(int(code) + 1) % 10**6:06d}")
    _submit(page)
    expect(page.locator("main")).to_contain_text("Incorrect code.")
    expect(page.locator(".site-user")).to_contain_text("Log in")
    shots(page, "totp-login-wrong-code")
    page.locator("input[name=code]").fill(fresh_totp(secret))
    _submit(page)
    expect(page.locator(".site-user .user-email")).to_have_text(email)
    expect(page).to_have_url(base + "/")  # the dashboard
    assert _balance(page) == Decimal("10")

    # -- A named API key, created right after the login (sudo mode: no second password).
    page.locator(".site-nav").get_by_role("link", name="API keys").click()
    expect(page).to_have_url(base + "/keys/")
    page.get_by_label("Name").fill("rotating key")
    page.get_by_role("button", name="Create key").click()
    if _reauthenticate_if_asked(page, password):
        sudo_prompts.append("creating a key asked for the password right after a fresh login")
        # allauth replays the suspended POST after the password; submit again only if it did not.
        if page.locator("#new-key").count() == 0:
            page.get_by_label("Name").fill("rotating key")
            page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#new-key")
    expect(new_key).to_be_visible()
    old_secret = new_key.inner_text().strip()
    assert old_secret.startswith("pgk_") and len(old_secret) > 20, old_secret
    shots(page, "keys-created")
    assert _profile(site, old_secret).status_code == 200

    # -- The key's page (from its name), rotate "at once", read the new secret once.
    page.goto(base + "/keys/")
    expect(page.locator("#new-key")).to_have_count(0)
    page.locator("#keys tbody tr", has_text="rotating key").get_by_role(
        "link", name="rotating key"
    ).click()
    expect(page).to_have_url(re.compile(r"/keys/[0-9a-f-]{36}/$"))
    key_url = page.url
    expect(page.locator("main h1")).to_contain_text("rotating key")
    rotate = page.locator("main form", has=page.get_by_role("button", name="Rotate secret"))
    rotate.get_by_label("The old secret stops working").select_option(label="at once")
    rotate.get_by_role("button", name="Rotate secret").click()
    if _reauthenticate_if_asked(page, password):
        sudo_prompts.append("rotating a key asked for the password right after a fresh login")
        if page.locator("#new-key").count() == 0:
            page.goto(key_url)
            rotate.get_by_label("The old secret stops working").select_option(label="at once")
            rotate.get_by_role("button", name="Rotate secret").click()
    new_key = page.locator("#new-key")
    expect(new_key).to_be_visible()
    new_secret = new_key.inner_text().strip()
    assert new_secret.startswith("pgk_") and new_secret != old_secret, (old_secret, new_secret)
    expect(page.locator("main .keybox")).to_contain_text("The old secret no longer works.")
    shots(page, "key-rotated")

    # The old secret is refused at once, the new one works.
    response = _profile(site, old_secret)
    assert response.status_code == 401, response.text
    response = _profile(site, new_secret)
    assert response.status_code == 200, response.text
    assert response.json()["email"] == email and response.json()["key"]["name"] == "rotating key"

    # The key's activity: created, then rotated (newest first).
    page.goto(key_url)
    expect(page.locator("#new-key")).to_have_count(0)
    assert new_secret not in page.content()
    kinds = [k.strip() for k in page.locator("main table.table .badge").all_inner_texts()]
    assert kinds == ["rotated", "created"], kinds
    shots(page, "key-activity")

    # -- Login throttling, for a second, fresh user in a browser context of its own: after 6
    # wrong passwords even the right one is refused for a while.
    other = f"throttle-{secrets.token_hex(4)}@example.com"
    other_password = "Browser-pw-" + secrets.token_hex(6)
    site.manage("users", "add", other, "--password", other_password)
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        second = context.new_page()
        refusals = []
        for attempt in range(6):
            _log_in(second, base, other, f"wrong-{attempt}-{secrets.token_hex(3)}")
            expect(second).to_have_url(re.compile(r"/accounts/login/$"))
            error = second.locator("main .errorlist, main .notice-error").first
            expect(error).to_be_visible()
            refusals.append(error.inner_text().strip())
        assert "not correct" in refusals[0], refusals
        _log_in(second, base, other, other_password)
        expect(second.locator(".site-user")).to_contain_text("Log in")
        expect(second.locator(".site-user .user-email")).to_have_count(0)
        expect(second.locator("main")).to_contain_text(re.compile(r"too many", re.I))
        shots(second, "throttled-login")
    finally:
        context.close()
    # The first user, still logged in, is not affected.
    page.goto(base + "/account/")
    expect(page.locator(".site-user .user-email")).to_have_text(email)

    assert not page.js_errors, page.js_errors
    assert not sudo_prompts, sudo_prompts
