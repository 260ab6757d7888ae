import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from billing.models import MONEY

MODALITIES = [(m, m) for m in ("text", "image", "video", "audio", "embedding")]
ENDPOINTS = {
    "text": "/v1/generate-text",
    "image": "/v1/generate-image",
    "video": "/v1/generate-video",
    "audio": "/v1/generate-audio",
    "embedding": "/v1/embeddings",
}


class AIModel(models.Model):
    """A catalogue entry: what a model is, how it is priced and which backend runs it."""

    slug = models.SlugField(max_length=100, unique=True, help_text="The public model id")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    modality = models.CharField(max_length=16, choices=MODALITIES)
    backend = models.CharField(max_length=32, help_text="trigram | openai")
    config = models.JSONField(default=dict, blank=True)
    builtin = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    per_request = models.DecimalField(default=Decimal(0), **MONEY)
    per_1k_input = models.DecimalField(default=Decimal(0), **MONEY)
    per_1k_output = models.DecimalField(default=Decimal(0), **MONEY)
    per_image = models.DecimalField(default=Decimal(0), **MONEY)
    per_second = models.DecimalField(default=Decimal(0), **MONEY)
    max_tokens_limit = models.PositiveIntegerField(default=1024)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["modality", "slug"]
        verbose_name = "model"

    def __str__(self):
        return self.slug

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.modality]

    @property
    def owned_by(self) -> str:
        return "playground" if self.builtin else "upstream"


class Job(models.Model):
    PENDING, RUNNING, SUCCESS, FAILED, CANCELED = (
        "pending",
        "running",
        "success",
        "failed",
        "canceled",
    )
    STATUSES = [(s, s) for s in (PENDING, RUNNING, SUCCESS, FAILED, CANCELED)]
    TERMINAL = (SUCCESS, FAILED, CANCELED)

    request_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    model = models.ForeignKey(AIModel, null=True, on_delete=models.SET_NULL, related_name="jobs")
    # Kept so history names the model even after an operator removes it.
    model_slug = models.CharField(max_length=100)
    modality = models.CharField(max_length=16, choices=MODALITIES)
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=STATUSES, default=PENDING, db_index=True)
    progress = models.FloatField(default=0)
    output = models.JSONField(default=dict, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    hold_amount = models.DecimalField(default=Decimal(0), **MONEY)
    hold_open = models.BooleanField(default=False)
    cost = models.DecimalField(null=True, blank=True, **MONEY)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A public read-only link, off by default: a random token; cleared to revoke it.
    share_token = models.CharField(max_length=64, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["user", "-created", "-id"])]

    def __str__(self):
        return str(self.request_id)

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def queue_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return max(0.0, (self.started_at - self.created).total_seconds())

    @property
    def run_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` claimed by a submit that created a job (kept 24 h, per account)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_idempotency_key_per_user")
        ]

    def __str__(self):
        return self.key
