from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import URLValidator

from billing import ledger
from playground.catalogue import BUILTIN_SLUGS, sync_builtins
from playground.models import AIModel

PRICES = {
    "per_1k_input": "per_1k_input",
    "per_1k_output": "per_1k_output",
    "per_request": "per_request",
    "per_image": "per_image",
}


class Command(BaseCommand):
    help = "Manage the model catalogue."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser(
            "add-openai", help="Add or update a model on an OpenAI-compatible upstream."
        )
        add.add_argument("id")
        add.add_argument("--base-url", required=True, help="Including /v1, as in the openai SDK.")
        add.add_argument("--upstream-model")
        add.add_argument("--api-key-env", help="Environment variable holding the upstream key.")
        add.add_argument("--modality", default="text", choices=["text", "embedding", "image"])
        add.add_argument("--name")
        add.add_argument("--description")
        for option in ("--per-1k-input", "--per-1k-output", "--per-request", "--per-image"):
            add.add_argument(option)
        remove = sub.add_parser("remove", help="Remove an added model; its jobs stay in history.")
        remove.add_argument("id")
        sub.add_parser("list", help="One line per model: id, modality, backend, status.")
        sub.add_parser("sync", help="Load the built-in models (done by migrate too).")

    def handle(self, *args, action, **options):
        getattr(self, action.replace("-", "_"))(**options)

    def add_openai(self, **options):
        slug = options["id"]
        if slug in BUILTIN_SLUGS:
            raise CommandError(f"{slug} is a built-in model and cannot be replaced")
        if not AIModel.slug.field.run_validators or not _is_slug(slug):
            raise CommandError(f"{slug!r} is not a valid model id (letters, digits, - _ .)")
        try:
            URLValidator(schemes=["http", "https"])(options["base_url"])
        except ValidationError:
            raise CommandError(
                f"--base-url {options['base_url']!r} is not an http(s) URL"
            ) from None
        env_name = options["api_key_env"]
        if env_name and not env_name.replace("_", "").isalnum():
            raise CommandError(f"--api-key-env {env_name!r} is not an environment variable name")
        prices = {}
        for field in PRICES:
            value = options[field]
            if value is not None:
                try:
                    prices[field] = ledger.parse_amount(value)
                except ValueError as exc:
                    raise CommandError(f"--{field.replace('_', '-')}: {exc}") from None
        config = {
            "base_url": options["base_url"].rstrip("/"),
            "upstream_model": options["upstream_model"] or slug,
        }
        if env_name:
            config["api_key_env"] = env_name
        existing = AIModel.objects.filter(slug=slug).first()
        defaults = {
            "name": options["name"] or (existing.name if existing else slug),
            "description": options["description"]
            or (existing.description if existing else f"{slug} on an OpenAI-compatible upstream."),
            "modality": options["modality"],
            "backend": "openai",
            "config": config,
            "builtin": False,
            "enabled": True,
            "max_tokens_limit": existing.max_tokens_limit if existing else 4096,
            **prices,
        }
        AIModel.objects.update_or_create(slug=slug, defaults=defaults)

    def remove(self, **options):
        slug = options["id"]
        if slug in BUILTIN_SLUGS:
            raise CommandError(f"{slug} is a built-in model and cannot be removed")
        deleted, _ = AIModel.objects.filter(slug=slug).delete()
        if not deleted:
            raise CommandError(f"no model {slug}")

    def list(self, **options):
        for model in AIModel.objects.order_by("slug"):
            status = "enabled" if model.enabled else "disabled"
            self.stdout.write(f"{model.slug}\t{model.modality}\t{model.backend}\t{status}")

    def sync(self, **options):
        sync_builtins()


def _is_slug(value: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value))
