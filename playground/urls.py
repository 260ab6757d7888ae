from django.contrib import admin
from django.urls import include, path, re_path

from accounts import views as account_views

from . import (
    batch,  # noqa: F401  (registers /v1/batch routes on `api`)
    files_api,  # noqa: F401  (registers /v1/files on `api`)
    jobviews,
    media,
    openai_api,  # noqa: F401  (registers the OpenAI-compatible routes on `api`)
    views,
)
from .api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("models/", views.catalogue_page, name="catalogue"),
    path("models/<slug:slug>/", views.model_page, name="model"),
    path("models/<slug:slug>/run", views.run_model, name="run-model"),
    path("models/<slug:slug>/preview", views.preview, name="model-preview"),
    path("models/<slug:slug>/chat", views.chat_page, name="model-chat"),
    path("models/<slug:slug>/chat/send", views.chat_send, name="model-chat-send"),
    path("models/<slug:slug>/docs", views.docs_page, name="model-docs"),
    path("compare/", views.compare_page, name="compare"),
    path("compare/run", views.compare_run, name="compare-run"),
    path("dashboard/recent", jobviews.recent_jobs, name="recent-jobs"),
    path("jobs/", jobviews.jobs_page, name="jobs"),
    path("jobs/<uuid:request_id>/", jobviews.job_page, name="job"),
    path("jobs/<uuid:request_id>/cancel", jobviews.cancel, name="cancel-job"),
    path("jobs/<uuid:request_id>/rerun", jobviews.rerun, name="rerun-job"),
    path("jobs/<uuid:request_id>/share", jobviews.share, name="share-job"),
    path("s/<str:token>/", jobviews.shared_job, name="shared-job"),
    path("balance", views.balance, name="balance"),
    path("billing/", include("billing.urls")),
    path("keys/", account_views.keys, name="keys"),
    path("keys/<uuid:key_id>/", account_views.key_detail, name="key"),
    path("keys/<uuid:key_id>/rotate", account_views.rotate_key, name="rotate-key"),
    path("keys/<uuid:key_id>/revoke", account_views.revoke_key, name="revoke-key"),
    path("account/", account_views.profile, name="profile"),
    path("account/delete/", account_views.delete_account, name="delete-account"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("media/<uuid:public_id>/<str:filename>", media.serve, name="media"),
    path("v1/", api.urls),
    # Anything else under /v1 is a JSON 404, not an HTML page.
    re_path(r"^v1/", views.api_not_found),
]
