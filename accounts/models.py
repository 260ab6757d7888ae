import uuid

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone

TIERS = [("free", "free"), ("pro", "pro"), ("unlimited", "unlimited")]


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email, password=None, **extra):
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractUser):
    """An account, identified by email."""

    username = None
    email = models.EmailField("email address", unique=True)
    tier = models.CharField(max_length=16, choices=TIERS, default="free")
    # Web signup under mandatory verification: the signup grant waits for the first confirmation.
    signup_grant_pending = models.BooleanField(default=False)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS = []
    objects = UserManager()

    def __str__(self):
        return self.email


class ApiKey(models.Model):
    """An API key: only a lookup prefix and a keyed hash of the secret are stored."""

    PERIODS = [("", "never"), ("daily", "daily"), ("weekly", "weekly"), ("monthly", "monthly")]

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True)
    hashed = models.CharField(max_length=64)
    # During a rotation's grace period the previous secret still works (its own lookup prefix).
    previous_prefix = models.CharField(max_length=12, blank=True, db_index=True)
    previous_hashed = models.CharField(max_length=64, blank=True)
    previous_valid_until = models.DateTimeField(null=True, blank=True)
    tier = models.CharField(max_length=16, choices=TIERS, default="free")
    created = models.DateTimeField(default=timezone.now)
    rotated_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.CharField(max_length=64, blank=True, help_text="Coarse: a /24 or /48")
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    spend_cap = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    spend_cap_period = models.CharField(max_length=8, choices=PERIODS, blank=True, default="")
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model ids this key may use; empty: all"
    )

    class Meta:
        ordering = ["-created"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.prefix}… ({self.name})"

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def allows(self, model_slug: str) -> bool:
        return not self.allowed_models or model_slug in self.allowed_models


class KeyEvent(models.Model):
    """The audit log of API keys: what happened to which key, when, from where."""

    KINDS = [(k, k) for k in ("created", "rotated", "revoked", "expired", "cap_reached", "updated")]
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="key_events")
    key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="events")
    key_prefix = models.CharField(max_length=12)
    key_name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=KINDS)
    detail = models.CharField(max_length=300, blank=True)
    ip = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.kind} {self.key_prefix}"
