"""Session tracking (allauth.usersessions) through our throttled middleware."""

from allauth.usersessions.models import UserSession
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone


def writes(queries):
    return [
        q["sql"]
        for q in queries
        if "usersessions_usersession" in q["sql"]
        and q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT"))
    ]


def test_a_session_is_listed_and_touched_at_most_once_a_minute(client, alice):
    client.force_login(alice)
    with CaptureQueriesContext(connection) as first:
        assert client.get("/models/").status_code == 200
    assert UserSession.objects.filter(user=alice).count() == 1
    assert writes(first.captured_queries)
    with CaptureQueriesContext(connection) as again:
        assert client.get("/models/").status_code == 200
    assert writes(again.captured_queries) == []
    # A minute later (the marker gone) the visit is recorded again.
    UserSession.objects.update(last_seen_at=timezone.now() - timezone.timedelta(hours=1))
    cache.clear()
    client.get("/models/")
    seen = UserSession.objects.get(user=alice).last_seen_at
    assert timezone.now() - seen < timezone.timedelta(minutes=1)


def test_sessions_page_lists_the_session(client, alice):
    client.force_login(alice)
    client.get("/models/")
    page = client.get("/accounts/sessions/")
    assert page.status_code == 200
