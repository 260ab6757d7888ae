"""The billing page in Chromium: numbers, charts, live search, redeeming a code."""

import pytest

from tests.browser import require_browser
from tests.live import start_site

pytestmark = pytest.mark.browser

SEED = """
import random
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from accounts.models import User
from accounts import keys
from billing import ledger, redeem
from billing.models import LedgerEntry
from playground.models import Job
user = User.objects.get(email="ada@example.com")
account = ledger.account_for(user)
key, _ = keys.create_key(user, "laptop")
ci, _ = keys.create_key(user, "ci-runner")
rng = random.Random(4)
now = timezone.now()
for day in range(29, -1, -1):
    for model in ("trigram-pydoc", "llama-4-scout", "flux-schnell"):
        for n in range(rng.randint(0, 3)):
            job = Job.objects.create(user=user, model_slug=model, modality="text",
                                     api_key=rng.choice([key, ci, None]), status="success")
            cost = Decimal(rng.randint(1, 400)) / 1000
            when = now - timedelta(days=day, minutes=rng.randint(0, 600))
            LedgerEntry.objects.bulk_create([
                LedgerEntry(account=account, kind="hold", amount=-cost * 2, job=job,
                            reason=f"{model}: worst case held", created=when),
                LedgerEntry(account=account, kind="release", amount=cost * 2, job=job,
                            reason=f"{model}: hold released", created=when),
                LedgerEntry(account=account, kind="capture", amount=-cost, job=job,
                            reason=f"{model}: charged for usage", created=when),
            ])
            account.available -= cost
account.save()
from billing import reports
reports.rebuild_usage(account)
from django.db import transaction
from billing import payments
from billing.models import Payment
with transaction.atomic():
    paid = Payment.objects.create(account=account, credits=Decimal(50), amount_cents=2000,
                                  currency="usd", status="paid", paid_at=timezone.now(),
                                  checkout_session="cs_test_seed", payment_intent="pi_test_seed")
    payments._sync(paid)
redeem.create_batch(1, Decimal("5"), batch="browser")
print(redeem.RedeemCode.objects.get(batch="browser").code)
"""


@pytest.fixture
def site(tmp_path):
    require_browser()
    live = start_site(tmp_path / "site")
    yield live
    live.stop()


def test_billing_page_in_a_browser(site, page, shots):
    site.manage("users", "add", "ada@example.com", "--password", "ada-pass-123", "--credits", "50")
    code = site.manage("shell", "-c", SEED).stdout.strip().splitlines()[-1]
    page.goto(site.base_url + "/accounts/login/?next=/billing/")
    page.fill("input[name=login]", "ada@example.com")
    page.fill("input[name=password]", "ada-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/billing/")
    assert page.locator(".site-nav a[aria-current=page]").inner_text() == "Billing"
    assert page.locator("svg.chart").count() == 2
    assert page.locator("svg.chart rect").count() > 30
    assert page.locator("#topups-off").is_visible()
    shots(page, "billing")
    # Live search swaps the table only.
    page.fill("#id_q", "capture")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#transactions .badge')]"
        ".every(b => b.textContent === 'capture')"
    )
    assert "q=capture" in page.url
    before = page.locator("#stat-balance").inner_text()
    page.fill("#id_code", code.lower().replace("-", ""))
    page.click("form.redeem-form button")
    page.wait_for_selector(".notice-success")
    assert "5 credits added" in page.locator(".notice-success").inner_text()
    after = page.locator("#stat-balance").inner_text()
    assert float(after) - float(before) == pytest.approx(5)
    shots(page, "redeemed")
    page.set_viewport_size({"width": 390, "height": 800})
    shots(page, "phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click(".purchases a")
    page.wait_for_url("**/billing/receipts/**")
    assert "50 Playground credits" in page.locator(".receipt").inner_text()
    shots(page, "receipt")
    assert not page.js_errors, page.js_errors


def test_credit_packs_show_when_stripe_is_configured(tmp_path, page, shots):
    require_browser()
    env = {
        "STRIPE_SECRET_KEY": "sk_test_unused",
        "STRIPE_WEBHOOK_SECRET": "whsec_unused",
        "PLAYGROUND_CREDIT_PACKS": "10=5,50=20,200=70",
    }
    site = start_site(tmp_path / "site", extra_env=env)
    try:
        site.manage("users", "add", "bo@example.com", "--password", "bo-pass-1234")
        page.goto(site.base_url + "/accounts/login/?next=/billing/")
        page.fill("input[name=login]", "bo@example.com")
        page.fill("input[name=password]", "bo-pass-1234")
        page.click("button[type=submit]")
        page.wait_for_url("**/billing/")
        packs = page.locator(".packs button")
        assert packs.count() == 3
        assert "200 credits" in packs.nth(2).inner_text()
        assert "70.00 USD" in packs.nth(2).inner_text()
        assert page.locator("#topups-off").count() == 0
        assert page.locator(".empty").first.is_visible()  # no charges yet
        shots(page, "packs")
        assert not page.js_errors, page.js_errors
    finally:
        site.stop()
