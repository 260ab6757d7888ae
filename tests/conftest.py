import pytest
from django.core.cache import cache

from accounts import keys
from accounts.models import User
from billing import ledger

pytest_plugins = ["tests.fake_openai", "tests.browser"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()


@pytest.fixture
def alice(db):
    user = User.objects.create_user(email="alice@example.com", password="alice-password-1")
    ledger.account_for(user)
    return user


@pytest.fixture
def bob(db):
    user = User.objects.create_user(email="bob@example.com", password="bob-password-1")
    ledger.account_for(user)
    return user


@pytest.fixture
def alice_with_credits(alice):
    from decimal import Decimal

    ledger.grant(alice, Decimal("10"), reason="test")
    return alice


@pytest.fixture
def alice_key(alice_with_credits):
    """The raw secret of a key of Alice's, who has 10 credits."""
    return keys.create_key(alice_with_credits, "test")[1]


@pytest.fixture
def bob_key(bob):
    from decimal import Decimal

    ledger.grant(bob, Decimal("10"), reason="test")
    return keys.create_key(bob, "test")[1]


@pytest.fixture
def api(client):
    """A JSON client for /v1: api.post(path, body, key=...), api.get(path, key=...)."""

    class Api:
        def post(self, path, body=None, key=None, **headers):
            if key:
                headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
            import json

            data = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
            return client.post(path, data, content_type="application/json", **headers)

        def get(self, path, key=None, **headers):
            if key:
                headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
            return client.get(path, **headers)

    return Api()


def sudo_login(client, user):
    """Log in as after typing the password just now (sudo mode on)."""
    import time

    from allauth.account.internal.flows.login import AUTHENTICATION_METHODS_SESSION_KEY

    client.force_login(user)
    session = client.session
    session[AUTHENTICATION_METHODS_SESSION_KEY] = [{"method": "password", "at": time.time()}]
    session.save()


def require_postgres():
    """Skip off PostgreSQL (fail instead with PLAYGROUND_REQUIRE_SERVICES=1): locking proofs."""
    import os

    from django.db import connection

    if connection.vendor == "postgresql":
        return
    if os.environ.get("PLAYGROUND_REQUIRE_SERVICES") == "1":
        pytest.fail("this test needs PostgreSQL (set DATABASE_URL)")
    pytest.skip("runs on PostgreSQL")
