"""Accounts (CONTRACT §1 signup grant, §2 browser auth, §8 ledger): signup and verification,
login and logout, passwords, email change, login throttling, TOTP and recovery codes, the profile
page, account deletion and the sessions page."""

import base64
import hashlib
import hmac
import re
import struct
import time
from decimal import Decimal

import pytest
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.db.models import Sum
from django.test import Client

from accounts import keys
from accounts.models import ApiKey, KeyEvent, User
from billing import ledger
from billing.models import CreditAccount, LedgerEntry
from playground.engine import registry
from playground.models import Job
from tests.conftest import sudo_login

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "trigram-pydoc"
PASSWORD = "a-long-pass-phrase-9"
ALICE_PASSWORD = "alice-password-1"


# --- helpers -------------------------------------------------------------------------------------


def totp(secret: str, at: float | None = None) -> str:
    """RFC 6238: HMAC-SHA1 over the 30-second counter, dynamically truncated to 6 digits."""
    counter = int((time.time() if at is None else at) // 30)
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def fresh_totp(secret: str) -> str:
    """A code with a few seconds of its window left (no tolerance on the server's side)."""
    if time.time() % 30 > 27:
        time.sleep(30 - time.time() % 30 + 0.1)
    return totp(secret)


def wrong_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_totp_helper_matches_rfc_6238_vectors():
    # RFC 6238 appendix B, SHA-1 seed "12345678901234567890", last 6 digits.
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp(secret, 59) == "287082"
    assert totp(secret, 1111111109) == "081804"
    assert totp(secret, 2000000000) == "279037"


def signup(client, email="new@example.com", **extra):
    return client.post(
        "/accounts/signup/",
        {"email": email, "password1": PASSWORD, "password2": PASSWORD},
        **extra,
    )


def login(client, email, password, **extra):
    return client.post("/accounts/login/", {"login": email, "password": password}, **extra)


def logged_in_user(client):
    """The user of the client's session, or None (asks the profile page, as a browser would)."""
    response = client.get("/account/")
    if response.status_code != 200:
        return None
    return response.context["user"]


def link_in_mail(message, path_prefix):
    match = re.search(r"https?://[^/\s]+(" + re.escape(path_prefix) + r"[^\s]*)", message.body)
    assert match, message.body
    return match.group(1)


def confirm_by_link(client, path):
    """Follow an email's confirmation link as a person would: open it, press Confirm."""
    page = client.get(path)
    assert page.status_code == 200
    return client.post(path)


def signup_grants(user):
    return LedgerEntry.objects.filter(account__user=user, kind="grant", reason="signup grant")


def ledger_sum(account) -> Decimal:
    return account.entries.aggregate(s=Sum("amount"))["s"] or Decimal(0)


# --- signup and the signup grant -----------------------------------------------------------------


def test_signup_grants_the_setting_once(client, settings):
    settings.PLAYGROUND_SIGNUP_CREDITS = Decimal("3.25")
    response = signup(client)
    assert response.status_code == 302
    user = User.objects.get(email="new@example.com")
    assert logged_in_user(client) == user
    assert ledger.balances(user) == (Decimal("3.25"), Decimal("3.25"))
    assert signup_grants(user).count() == 1
    # Logging out and in, and verifying the address (optional here), grant nothing more.
    client.post("/accounts/logout/")
    assert login(client, "new@example.com", PASSWORD).status_code == 302
    confirm_by_link(client, link_in_mail(mail.outbox[-1], "/accounts/confirm-email/"))
    assert signup_grants(user).count() == 1
    assert ledger.balances(user)[0] == Decimal("3.25")
    # Signing up again with the same address (any case) creates and grants nothing.
    client.post("/accounts/logout/")
    signup(Client(), email="NEW@example.com")
    assert User.objects.filter(email__iexact="new@example.com").count() == 1
    assert signup_grants(user).count() == 1


def test_mandatory_verification_grants_on_confirmation_only_once(client, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    settings.PLAYGROUND_SIGNUP_CREDITS = Decimal("10")
    mail.outbox.clear()
    signup(client, email="verify@example.com")
    user = User.objects.get(email="verify@example.com")
    assert ledger.balances(user)[0] == 0
    assert not signup_grants(user).exists()
    assert logged_in_user(client) is None  # unverified: not logged in yet
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["verify@example.com"]
    link = link_in_mail(mail.outbox[0], "/accounts/confirm-email/")
    # Opening the link is not confirming it.
    assert client.get(link).status_code == 200
    assert ledger.balances(user)[0] == 0
    client.post(link)
    assert ledger.balances(user)[0] == Decimal("10")
    # The link again, from another browser too: no second grant.
    client.post(link)
    confirm_by_link(Client(), link)
    assert signup_grants(user).count() == 1
    assert ledger.balances(user)[0] == Decimal("10")
    browser = Client()
    assert login(browser, "verify@example.com", PASSWORD).status_code == 302
    # Confirming a changed address later is no second signup.
    change_email(browser, "verified-new@example.com", PASSWORD)
    user.refresh_from_db()
    assert user.email == "verified-new@example.com"
    assert signup_grants(user).count() == 1
    assert ledger.balances(user)[0] == Decimal("10")


def test_email_change_under_mandatory_verification_grants_no_signup_credits(client, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    call_command("users", "add", "op@example.com", "--password", PASSWORD, "--credits", "1")
    user = User.objects.get(email="op@example.com")
    assert ledger.balances(user)[0] == Decimal("1")
    assert login(client, "op@example.com", PASSWORD).status_code == 302
    change_email(client, "op-new@example.com", PASSWORD)
    user.refresh_from_db()
    assert user.email == "op-new@example.com"
    assert ledger.balances(user)[0] == Decimal("1")  # `users add` grants only --credits


# --- login, logout, passwords, email -------------------------------------------------------------


def test_login_and_logout(client, alice):
    response = login(client, alice.email, "wrong-password")
    assert response.status_code == 200 and logged_in_user(client) is None
    response = login(client, "ALICE@example.com", ALICE_PASSWORD)
    assert response.status_code == 302 and response["Location"] == settings.LOGIN_REDIRECT_URL
    assert logged_in_user(client) == alice
    # A GET on logout asks; only a POST logs out.
    assert client.get("/accounts/logout/").status_code == 200
    assert logged_in_user(client) == alice
    assert client.post("/accounts/logout/").status_code == 302
    assert logged_in_user(client) is None
    assert client.get("/account/")["Location"].startswith("/accounts/login/")


def test_password_change(client, alice):
    login(client, alice.email, ALICE_PASSWORD)
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": "not-it", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.check_password(ALICE_PASSWORD)
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": ALICE_PASSWORD, "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert logged_in_user(client) == alice  # still logged in here
    other = Client()
    assert login(other, alice.email, ALICE_PASSWORD).status_code == 200
    assert logged_in_user(other) is None
    assert login(other, alice.email, PASSWORD).status_code == 302


def test_password_reset_by_email(client, alice):
    mail.outbox.clear()
    response = client.post("/accounts/password/reset/", {"email": "Alice@Example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [alice.email]
    link = link_in_mail(mail.outbox[0], "/accounts/password/reset/key/")
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    form_url = form_page.redirect_chain[-1][0] if form_page.redirect_chain else link
    response = client.post(form_url, {"password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)
    assert login(Client(), alice.email, PASSWORD).status_code == 302
    # The link is spent.
    again = Client().get(link, follow=True)
    assert 'name="password1"' not in again.content.decode()
    # An unknown address sends nothing that reveals an account.
    mail.outbox.clear()
    Client().post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert all("/accounts/password/reset/key/" not in m.body for m in mail.outbox)


def change_email(client, new_email, password):
    """Add an address on allauth's email page (re-entering the password when asked), then
    confirm it from the emailed link."""
    mail.outbox.clear()
    response = client.post("/accounts/email/", {"action_add": "", "email": new_email})
    if response.status_code == 302 and "/reauthenticate/" in response["Location"]:
        reauth = client.post(response["Location"], {"password": password})
        assert reauth.status_code == 302
        if not any(new_email in m.to for m in mail.outbox):
            client.post("/accounts/email/", {"action_add": "", "email": new_email})
    messages = [m for m in mail.outbox if new_email in m.to]
    assert messages, [m.to for m in mail.outbox]
    confirm_by_link(client, link_in_mail(messages[-1], "/accounts/confirm-email/"))


def test_email_change_add_verify_make_primary(client, alice):
    from allauth.account.models import EmailAddress

    login(client, alice.email, ALICE_PASSWORD)
    assert client.get("/accounts/email/").status_code == 200
    change_email(client, "alice.new@example.com", ALICE_PASSWORD)
    new = EmailAddress.objects.get(email="alice.new@example.com")
    assert new.verified and new.user == alice
    client.post("/accounts/email/", {"action_primary": "", "email": "alice.new@example.com"})
    new.refresh_from_db()
    alice.refresh_from_db()
    assert new.primary
    assert alice.email == "alice.new@example.com"
    page = client.get("/accounts/email/").content.decode()
    assert "alice.new@example.com" in page
    other = Client()
    assert login(other, "alice.new@example.com", ALICE_PASSWORD).status_code == 302
    assert login(Client(), "alice@example.com", ALICE_PASSWORD).status_code == 200


# --- login throttling ----------------------------------------------------------------------------


def _per_key_limit() -> int:
    rules = settings.ACCOUNT_RATE_LIMITS["login_failed"].split(",")
    (amount,) = [int(r.split("/")[0]) for r in rules if r.endswith("/key")]
    return amount


def test_failed_logins_for_one_email_get_throttled(alice):
    limit = _per_key_limit()
    refused_at = None
    for attempt in range(1, limit + 2):
        # A new client (and address) each time: the per-account limit must hold on its own.
        response = login(Client(), alice.email, "wrong-password", REMOTE_ADDR=f"10.0.0.{attempt}")
        body = response.content.decode()
        if response.status_code == 429 or "Too many" in body:
            refused_at = attempt
            break
        assert response.status_code == 200
    assert refused_at is not None and refused_at <= limit + 1
    # While throttled, the right password is refused too.
    browser = Client()
    response = login(browser, alice.email, ALICE_PASSWORD, REMOTE_ADDR="10.0.1.1")
    assert response.status_code in (200, 429)
    assert response.status_code == 429 or "Too many" in response.content.decode()
    assert logged_in_user(browser) is None
    # Another account is not affected.
    bob = User.objects.create_user(email="bob2@example.com", password="bob-password-1")
    assert login(Client(), bob.email, "bob-password-1", REMOTE_ADDR="10.0.2.1").status_code == 302


# --- two-factor authentication -------------------------------------------------------------------


def activate_totp(client, password) -> str:
    """Activate TOTP as a person would; returns the secret."""
    response = client.get("/accounts/2fa/totp/activate/")
    if response.status_code == 302 and "/reauthenticate/" in response["Location"]:
        assert client.post(response["Location"], {"password": password}).status_code == 302
        response = client.get("/accounts/2fa/totp/activate/")
    assert response.status_code == 200
    html = response.content.decode()
    secret = re.search(r'id="authenticator_secret"[^>]*value="([A-Z2-7]+)"', html)
    secret = secret or re.search(r'value="([A-Z2-7]{32})"[^>]*id="authenticator_secret"', html)
    secret = secret.group(1)
    bad = client.post("/accounts/2fa/totp/activate/", {"code": wrong_code(totp(secret))})
    assert bad.status_code == 200
    from allauth.mfa.models import Authenticator

    assert not Authenticator.objects.filter(type="totp").exists()
    good = client.post("/accounts/2fa/totp/activate/", {"code": fresh_totp(secret)})
    assert good.status_code == 302, good.content.decode()[:2000]
    return secret


def recovery_codes(client) -> list[str]:
    response = client.get("/accounts/2fa/recovery-codes/")
    if response.status_code == 302 and "/reauthenticate/" in response["Location"]:
        client.post(response["Location"], {"password": ALICE_PASSWORD})
        response = client.get("/accounts/2fa/recovery-codes/")
    assert response.status_code == 200
    textarea = re.search(r"<textarea[^>]*>(.*?)</textarea>", response.content.decode(), re.S)
    return textarea.group(1).split()


def test_totp_activation_then_login_needs_a_correct_code(client, alice):
    login(client, alice.email, ALICE_PASSWORD)
    secret = activate_totp(client, ALICE_PASSWORD)
    client.post("/accounts/logout/")

    browser = Client()
    response = login(browser, alice.email, ALICE_PASSWORD)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/authenticate/")
    assert logged_in_user(browser) is None  # the password alone is not enough
    code = fresh_totp(secret)
    response = browser.post("/accounts/2fa/authenticate/", {"code": wrong_code(code)})
    assert response.status_code == 200
    assert logged_in_user(browser) is None
    response = browser.post("/accounts/2fa/authenticate/", {"code": code})
    assert response.status_code == 302
    assert logged_in_user(browser) == alice


def test_recovery_codes_are_listed_and_each_works_once(client, alice):
    login(client, alice.email, ALICE_PASSWORD)
    activate_totp(client, ALICE_PASSWORD)
    codes = recovery_codes(client)
    assert len(codes) >= 8 and all(re.fullmatch(r"\d{8}", c) for c in codes)
    client.post("/accounts/logout/")

    first = Client()
    login(first, alice.email, ALICE_PASSWORD)
    assert first.post("/accounts/2fa/authenticate/", {"code": codes[0]}).status_code == 302
    assert logged_in_user(first) == alice
    assert codes[0] not in recovery_codes(first)

    second = Client()
    login(second, alice.email, ALICE_PASSWORD)
    assert second.post("/accounts/2fa/authenticate/", {"code": codes[0]}).status_code == 200
    assert logged_in_user(second) is None
    assert second.post("/accounts/2fa/authenticate/", {"code": codes[1]}).status_code == 302
    assert logged_in_user(second) == alice


# --- profile, sessions ---------------------------------------------------------------------------


def test_profile_page_shows_email_balance_and_tier(client, alice_with_credits):
    response = Client().get("/account/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    alice_with_credits.tier = "pro"
    alice_with_credits.save()
    ledger.grant(alice_with_credits, Decimal("0.5"))
    client.force_login(alice_with_credits)
    html = client.get("/account/").content.decode()
    assert "alice@example.com" in html
    assert "10.5 credits" in html
    assert re.search(r"Rate tier</dt>\s*<dd>pro</dd>", html)


def test_sessions_page_lists_the_session(alice):
    browser = Client(HTTP_USER_AGENT="PlaygroundTestAgent/1.0")
    assert login(browser, alice.email, ALICE_PASSWORD).status_code == 302
    response = browser.get("/accounts/sessions/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "PlaygroundTestAgent/1.0" in html
    assert "127.0.0.1" in html
    assert Client().get("/accounts/sessions/").status_code == 302


# --- account deletion ----------------------------------------------------------------------------


def test_deleting_the_account_needs_sudo_mode_and_the_right_confirmation(client, alice):
    client.force_login(alice)  # no recent authentication
    assert client.get("/account/delete/").status_code == 200
    response = client.post("/account/delete/", {"confirm": alice.email})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/reauthenticate/")
    assert User.objects.filter(pk=alice.pk).exists()

    sudo_login(client, alice)
    for wrong in ("", "bob@example.com", "alice@example"):
        response = client.post("/account/delete/", {"confirm": wrong})
        assert response.status_code == 302
        assert User.objects.filter(pk=alice.pk).exists()
    assert logged_in_user(client) == alice
    assert Client().post("/account/delete/", {"confirm": alice.email}).status_code == 302
    assert User.objects.filter(pk=alice.pk).exists()


def test_deleting_the_account_removes_user_jobs_keys_and_keeps_the_ledger(
    client, api, alice_key, bob_key, monkeypatch
):
    alice = User.objects.get(email="alice@example.com")
    done = api.post(
        "/v1/generate-text", {"model": MODEL, "prompt": "The class", "max_tokens": 5}, key=alice_key
    ).json()["request_id"]
    monkeypatch.setattr(registry, "enqueue", lambda job: None)  # the next job stays pending
    pending = api.post(
        "/v1/generate-text",
        {"model": MODEL, "prompt": "The class", "max_tokens": 50},
        key=alice_key,
    ).json()["request_id"]
    pending_job = Job.objects.get(request_id=pending)
    assert pending_job.hold_open and Job.objects.get(request_id=done).status == "success"
    account = CreditAccount.objects.get(user=alice)
    rows_before = set(account.entries.values_list("id", "kind", "amount"))
    balance_before = account.balance
    assert account.held == pending_job.hold_amount > 0

    sudo_login(client, alice)
    response = client.post("/account/delete/", {"confirm": "  ALICE@example.com "})
    assert response.status_code == 302

    assert not User.objects.filter(email="alice@example.com").exists()
    assert not Job.objects.filter(request_id__in=[done, pending]).exists()
    assert not ApiKey.objects.filter(prefix=alice_key[:12]).exists()
    assert not KeyEvent.objects.filter(key_prefix=alice_key[:12]).exists()
    assert api.get("/v1/requests", key=alice_key).status_code == 401
    assert logged_in_user(client) is None
    # The ledger stays, anonymised: every old row, plus the release of the canceled job's hold.
    account.refresh_from_db()
    assert account.user is None
    rows_after = set(account.entries.values_list("id", "kind", "amount"))
    assert rows_before < rows_after
    (release,) = rows_after - rows_before
    assert release[1:] == ("release", pending_job.hold_amount)
    assert account.held == 0
    assert account.available == account.balance == balance_before == ledger_sum(account)
    # Bob is untouched.
    assert api.get("/v1/requests", key=bob_key).status_code == 200


def test_deleted_users_key_is_not_found_by_prefix(alice):
    key, raw = keys.create_key(alice, "gone")
    alice.delete()
    with pytest.raises(keys.UnknownKey):
        keys.find_key(raw)
