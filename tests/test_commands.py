"""The operator commands of CONTRACT §1: behaviour, output and exit codes."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts import keys
from accounts.models import User
from billing import ledger
from playground.models import AIModel

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_users_add_creates_verified_user_with_credits_and_tier():
    assert (
        run(
            "users",
            "add",
            "Carol@Example.com",
            "--password",
            "pw-carol-1",
            "--credits",
            "2.5",
            "--tier",
            "pro",
            "--staff",
        )
        == ""
    )
    user = User.objects.get(email="Carol@example.com")
    assert user.is_staff and user.tier == "pro" and user.check_password("pw-carol-1")
    assert user.emailaddress_set.get().verified
    assert ledger.balances(user)[0] == Decimal("2.5")


def test_users_add_defaults_to_no_credits_and_free():
    run("users", "add", "dave@example.com")
    user = User.objects.get(email="dave@example.com")
    assert user.tier == "free" and ledger.balances(user)[0] == 0


def test_users_add_existing_email_case_insensitive_is_an_error():
    run("users", "add", "erin@example.com")
    with pytest.raises(CommandError):
        run("users", "add", "ERIN@example.com")
    assert User.objects.count() == 1


@pytest.mark.parametrize("credits", ["-1", "abc", "1.1234567", "NaN"])
def test_users_add_bad_credits_is_an_error_and_creates_nothing(credits):
    with pytest.raises(CommandError):
        run("users", "add", "frank@example.com", "--credits", credits)
    assert not User.objects.exists()


def test_apikey_create_list_revoke(alice):
    raw = run("apikey", "create", "alice@example.com", "--name", "ci", "--tier", "pro").strip()
    assert raw.startswith("pgk_") and "\n" not in raw
    assert keys.authenticate_key(raw).tier == "pro"
    listing = run("apikey", "list", "alice@example.com").splitlines()
    assert listing == [f"{raw[:12]}\tci\tpro\tactive"]
    run("apikey", "revoke", raw[:12])
    assert keys.authenticate_key(raw) is None
    assert run("apikey", "list", "alice@example.com").split("\t")[-1].strip() == "revoked"


def test_apikey_default_tier_is_the_accounts(alice):
    alice.tier = "pro"
    alice.save()
    raw = run("apikey", "create", "alice@example.com").strip()
    assert keys.authenticate_key(raw).tier == "pro"


def test_apikey_revoke_by_full_key(alice):
    raw = run("apikey", "create", "alice@example.com").strip()
    run("apikey", "revoke", raw)
    assert keys.authenticate_key(raw) is None


def test_apikey_revoke_unknown_or_ambiguous_is_an_error(alice):
    with pytest.raises(CommandError):
        run("apikey", "revoke", "pgk_nothere1")
    key1, _ = keys.create_key(alice, "a")
    key2, _ = keys.create_key(alice, "b")
    key2.prefix = key1.prefix
    key2.save()
    with pytest.raises(CommandError, match="ambiguous"):
        run("apikey", "revoke", key1.prefix)


def test_apikey_unknown_user_is_an_error(db):
    with pytest.raises(CommandError):
        run("apikey", "create", "nobody@example.com")


def test_credits_grant_and_balance(alice):
    assert (
        run("credits", "grant", "alice@example.com", "1.25", "--reason", "promo").splitlines()[-1]
        == "1.25"
    )
    assert run("credits", "grant", "alice@example.com", "0.000001").strip() == "1.250001"
    assert run("credits", "balance", "alice@example.com").strip() == "1.250001"
    entry = alice.credit_account.entries.first()
    assert entry.kind == "grant" and "promo" in alice.credit_account.entries.last().reason


def test_credits_grant_the_largest_amount_a_money_column_holds(alice):
    largest = "99999999999999.999999"  # max_digits 20, 6 of them after the point
    assert run("credits", "grant", "alice@example.com", largest).strip() == largest


@pytest.mark.parametrize(
    "amount", ["-1", "1e3x", "0.0000001", "inf", "1e30", "99999999999999999999999", "1e14"]
)
def test_credits_grant_bad_amount_is_an_error(alice, amount):
    with pytest.raises(CommandError):
        run("credits", "grant", "alice@example.com", amount)
    assert ledger.balances(alice)[0] == 0


def test_models_add_openai_list_remove():
    run(
        "models",
        "add-openai",
        "llama-4-scout",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--upstream-model",
        "meta/llama",
        "--api-key-env",
        "UPSTREAM_KEY",
        "--per-1k-input",
        "0.1",
        "--per-1k-output",
        "0.2",
    )
    model = AIModel.objects.get(slug="llama-4-scout")
    assert model.config == {
        "base_url": "http://127.0.0.1:9/v1",
        "upstream_model": "meta/llama",
        "api_key_env": "UPSTREAM_KEY",
    }
    assert model.per_1k_output == Decimal("0.2") and model.modality == "text"
    lines = run("models", "list").splitlines()
    assert "llama-4-scout\ttext\topenai\tenabled" in lines
    assert "trigram-pydoc\ttext\ttrigram\tenabled" in lines
    # Updating keeps one row.
    run("models", "add-openai", "llama-4-scout", "--base-url", "http://127.0.0.1:10/v1")
    assert AIModel.objects.get(slug="llama-4-scout").config["base_url"] == "http://127.0.0.1:10/v1"
    run("models", "remove", "llama-4-scout")
    assert not AIModel.objects.filter(slug="llama-4-scout").exists()


def test_models_builtin_is_refused():
    with pytest.raises(CommandError):
        run("models", "add-openai", "trigram-pydoc", "--base-url", "http://127.0.0.1:9/v1")
    with pytest.raises(CommandError):
        run("models", "remove", "trigram-pydoc")
    assert AIModel.objects.get(slug="trigram-pydoc").backend == "trigram"


@pytest.mark.parametrize(
    "args", [["--base-url", "ftp://x"], ["--base-url", "http://x/v1", "--per-request", "-2"]]
)
def test_models_add_openai_bad_input_is_an_error(args):
    with pytest.raises(CommandError):
        run("models", "add-openai", "m1", *args)
    assert not AIModel.objects.filter(slug="m1").exists()


def test_models_remove_unknown_is_an_error():
    with pytest.raises(CommandError):
        run("models", "remove", "nope")
