import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from billing.models import MONEY

QUEUE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
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
    backend = models.CharField(max_length=32, help_text="trigram | hashing | openai | playground")
    config = models.JSONField(default=dict, blank=True)
    queue = models.CharField(
        max_length=64,
        blank=True,
        validators=[RegexValidator(QUEUE_RE, "Letters, digits, '-', '_' and '.' only.")],
        help_text="Engine queue its jobs go to; blank: by backend and modality "
        "(upstream for remote backends, else the modality). Workers take queues with "
        "`manage.py worker --queues`.",
    )
    soft_time_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Seconds a job may run before it is stopped and fails with time_limit; "
        "blank: PLAYGROUND_JOB_TIME_LIMIT.",
    )
    time_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Hard limit in seconds: a job still running then has its worker process "
        "killed; blank: PLAYGROUND_JOB_HARD_TIME_LIMIT. Must exceed the soft limit.",
    )
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

    def clean(self):
        from .engine.registry import time_limits

        soft, hard = time_limits(self)
        if soft >= hard:
            raise ValidationError(
                {"time_limit": f"The hard limit ({hard} s) must exceed the soft one ({soft} s)."}
            )

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
    # When its queue message was last sent: the reaper sends it again once this is old.
    queued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Where to POST the job's events (playground/webhooks.py), and which ones.
    webhook_url = models.CharField(max_length=2000, blank=True)
    webhook_events = models.JSONField(default=list, blank=True)
    # Set for the items of POST /v1/batch/completions (playground/batch.py).
    batch = models.ForeignKey(
        "Batch", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    batch_index = models.PositiveIntegerField(null=True, blank=True)
    # A public read-only link, off by default: a random token; cleared to revoke it.
    share_token = models.CharField(max_length=64, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["user", "-created", "-id"]),
            # The billing page's open holds: a handful of rows among millions of jobs.
            models.Index(
                fields=["user"], condition=models.Q(hold_open=True), name="job_open_holds"
            ),
        ]

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


class Batch(models.Model):
    """A list of prompts submitted at once: one job per accepted item, errors for the others."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches"
    )
    model_slug = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    # Items refused at submit, by index: {"3": {"code", "message", "param"}}.
    errors = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "batches"

    def __str__(self):
        return str(self.public_id)


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


class MediaFile(models.Model):
    """A stored file: an upload (`POST /v1/files`) or a job's output. Private to its owner."""

    INPUT, FINE_TUNE, OUTPUT = "input", "fine-tune", "output"
    PURPOSES = [(p, p) for p in (INPUT, FINE_TUNE, OUTPUT)]

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="media_files"
    )
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.CASCADE, related_name="files"
    )
    purpose = models.CharField(max_length=16, choices=PURPOSES)
    # The name in the storage backend; never shown (URLs carry public_id and filename).
    name = models.CharField(max_length=300)
    filename = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    bytes = models.PositiveBigIntegerField()
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["user", "purpose", "-created"])]

    def __str__(self):
        return f"{self.public_id}/{self.filename}"

    @property
    def ref(self) -> str:
        """How job outputs and parameters name this file: `<public_id>/<filename>`."""
        return f"{self.public_id}/{self.filename}"


class WebhookSecret(models.Model):
    """The account's webhook signing secret (Standard Webhooks: `whsec_` + base64 key)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret"
    )
    secret = models.CharField(max_length=100)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"webhook secret of {self.user_id}"


class WebhookDelivery(models.Model):
    """One attempt to deliver one of a job's webhook events."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="webhook_deliveries")
    message_id = models.CharField(max_length=64, help_text="webhook-id: the same for retries")
    event = models.CharField(max_length=16)
    url = models.CharField(max_length=2000)
    attempt = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(default=0)
    error = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created", "id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self):
        return f"{self.event} #{self.attempt} → {self.status_code or self.error}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
