"""Redeem codes: an operator's batch of codes, each worth credits to up to `max_uses` accounts."""

import re
from decimal import Decimal

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from . import ledger
from .models import RedeemCode, Redemption

# Codes carry 80 random bits, but guessing should still be slow: failed tries per account.
MAX_FAILURES = 20
FAILURE_WINDOW = 3600


class RedeemError(Exception):
    """Why a code cannot be redeemed (shown to the user as is)."""


def normalise(text: str) -> str:
    """Upper case, no spaces; a 16-character code typed without dashes gets them back."""
    code = re.sub(r"\s+", "", text or "").upper()
    if len(code) == 16 and "-" not in code:
        code = "-".join(code[i : i + 4] for i in range(0, 16, 4))
    return code


def create_batch(
    count: int, amount: Decimal, *, expires_at=None, max_uses: int = 1, batch: str = "", by=None
) -> list[RedeemCode]:
    """`count` new codes of `amount` credits each."""
    if count < 1 or count > 10_000:
        raise ValueError("a batch has 1 to 10000 codes")
    if amount <= 0:
        raise ValueError("the amount must be above zero")
    if max_uses < 1:
        raise ValueError("max uses must be at least 1")
    codes = [
        RedeemCode(
            amount=amount, expires_at=expires_at, max_uses=max_uses, batch=batch, created_by=by
        )
        for _ in range(count)
    ]
    return RedeemCode.objects.bulk_create(codes)


def redeem(user, text: str) -> RedeemCode:
    """Credit the code's amount to the user, once per code per user, never past `max_uses`."""
    code_text = normalise(text)
    if not code_text:
        raise RedeemError("Enter a code.")
    failures = f"redeem-failures:{user.pk}"
    if cache.get(failures, 0) >= MAX_FAILURES:
        raise RedeemError("Too many tries with wrong codes; try again in an hour.")
    try:
        return _redeem(user, code_text)
    except RedeemError:
        cache.add(failures, 0, FAILURE_WINDOW)
        try:
            cache.incr(failures)
        except ValueError:  # expired between add and incr
            cache.set(failures, 1, FAILURE_WINDOW)
        raise


def _redeem(user, code_text: str) -> RedeemCode:
    with transaction.atomic():
        # The code row lock serialises redemptions of one code: `uses` never passes max_uses.
        code = RedeemCode.objects.select_for_update().filter(code=code_text).first()
        if code is None:
            raise RedeemError("That code does not exist.")
        if code.expires_at is not None and code.expires_at <= timezone.now():
            raise RedeemError("That code has expired.")
        account = ledger.account_for(user)
        if Redemption.objects.filter(code=code, account=account).exists():
            raise RedeemError("You have already redeemed that code.")
        if code.uses >= code.max_uses:
            raise RedeemError("That code has been used up.")
        Redemption.objects.create(code=code, account=account)
        RedeemCode.objects.filter(pk=code.pk).update(uses=code.uses + 1)
        code.uses += 1
        ledger.grant(user, code.amount, reason=f"redeem code {code.code}", redeem_code=code)
    return code
