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
        _engine_arguments(add)
        remote = sub.add_parser(
            "add-remote",
            help="Add or update a model run by another Playground (or a service with the same "
            "queue-style API): jobs are submitted there, followed by polling, canceled there.",
            description="Add or update a model run by a remote Playground, or any service "
            "speaking its async protocol: POST {URL}/generate-<modality> with the model and "
            "parameters gives a request_id; GET {URL}/requests/{id} is polled (progress and "
            "text relayed live); POST {URL}/requests/{id}/cancel when the job is canceled "
            "here. The remote's output document (text, usage, images, video, audio_url) "
            "becomes this job's output. Live within 5 s, no restart.",
        )
        remote.add_argument("id")
        remote.add_argument("--base-url", required=True, help="The remote API root including /v1.")
        remote.add_argument("--upstream-model", help="The remote's model id (default: ID).")
        remote.add_argument(
            "--api-key-env", help="Environment variable holding the remote API key (Bearer)."
        )
        remote.add_argument(
            "--modality", default="text", choices=["text", "image", "video", "audio"]
        )
        remote.add_argument("--name")
        remote.add_argument("--description")
        remote.add_argument(
            "--max-tokens", type=int, help="Most tokens a text job may ask for (default 4096)."
        )
        for option in (
            "--per-1k-input",
            "--per-1k-output",
            "--per-request",
            "--per-image",
            "--per-second",
        ):
            remote.add_argument(option)
        _engine_arguments(remote)
        remove = sub.add_parser("remove", help="Remove an added model; its jobs stay in history.")
        remove.add_argument("id")
        sub.add_parser("list", help="One line per model: id, modality, backend, status.")
        sub.add_parser("sync", help="Load the built-in models (done by migrate too).")

    def handle(self, *args, action, **options):
        getattr(self, action.replace("-", "_"))(**options)

    def add_openai(self, **options):
        slug = options["id"]
        config = _upstream_config(slug, options)
        prices = _prices(options, PRICES)
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
            **_engine_fields(options, existing),
        }
        AIModel.objects.update_or_create(slug=slug, defaults=defaults)

    def add_remote(self, **options):
        slug = options["id"]
        config = _upstream_config(slug, options)
        prices = _prices(options, (*PRICES, "per_second"))
        from playground.schemas import params_class

        try:
            params_class(options["modality"], 1)
        except ValueError:
            # The parameters are validated here before they go to the remote.
            raise CommandError(
                f"--modality {options['modality']}: this site has no parameter schema for it"
            ) from None
        max_tokens = options["max_tokens"]
        if max_tokens is not None and not 1 <= max_tokens <= 1_000_000:
            raise CommandError("--max-tokens must be between 1 and 1000000")
        existing = AIModel.objects.filter(slug=slug).first()
        description = f"{slug} on a remote Playground ({config['upstream_model']})."
        defaults = {
            "name": options["name"] or (existing.name if existing else slug),
            "description": options["description"]
            or (existing.description if existing else description),
            "modality": options["modality"],
            "backend": "playground",
            "config": config,
            "builtin": False,
            "enabled": True,
            "max_tokens_limit": max_tokens or (existing.max_tokens_limit if existing else 4096),
            **prices,
            **_engine_fields(options, existing),
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


def _engine_arguments(parser) -> None:
    parser.add_argument(
        "--queue",
        help="Engine queue for its jobs (default: upstream); workers started with "
        "`worker --queues NAME` take it.",
    )
    parser.add_argument(
        "--soft-time-limit",
        type=int,
        help="Seconds before a job is stopped and fails with time_limit "
        "(default PLAYGROUND_JOB_TIME_LIMIT).",
    )
    parser.add_argument(
        "--time-limit",
        type=int,
        help="Hard limit in seconds: the worker process is killed "
        "(default PLAYGROUND_JOB_HARD_TIME_LIMIT).",
    )


def _engine_fields(options, existing) -> dict:
    """The queue and time limits given on the command line, checked; omitted ones unchanged."""
    import re

    from playground.engine.registry import time_limits
    from playground.models import QUEUE_RE

    fields = {}
    if options.get("queue") is not None:
        if options["queue"] and not re.fullmatch(QUEUE_RE, options["queue"]):
            raise CommandError(f"--queue {options['queue']!r} is not a queue name")
        fields["queue"] = options["queue"]
    for name in ("soft_time_limit", "time_limit"):
        value = options.get(name)
        if value is not None:
            if value < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1 second")
            fields[name] = value
    limits = AIModel(
        soft_time_limit=fields.get("soft_time_limit", existing and existing.soft_time_limit),
        time_limit=fields.get("time_limit", existing and existing.time_limit),
    )
    soft, hard = time_limits(limits)
    if soft >= hard:
        raise CommandError(f"the hard time limit ({hard} s) must exceed the soft one ({soft} s)")
    return fields


def _prices(options: dict, fields) -> dict:
    """The price options given, as exact amounts."""
    prices = {}
    for field in fields:
        if options[field] is not None:
            try:
                prices[field] = ledger.parse_amount(options[field])
            except ValueError as exc:
                raise CommandError(f"--{field.replace('_', '-')}: {exc}") from None
    return prices


def _upstream_config(slug: str, options: dict) -> dict:
    """The backend config of add-openai and add-remote, after what both refuse: a built-in or
    malformed id, a URL that is not http(s), a malformed variable name."""
    if slug in BUILTIN_SLUGS:
        raise CommandError(f"{slug} is a built-in model and cannot be replaced")
    if not _is_slug(slug):
        raise CommandError(f"{slug!r} is not a valid model id (letters, digits, - _ .)")
    try:
        URLValidator(schemes=["http", "https"])(options["base_url"])
    except ValidationError:
        raise CommandError(f"--base-url {options['base_url']!r} is not an http(s) URL") from None
    env_name = options["api_key_env"] or ""
    if env_name and not env_name.replace("_", "").isalnum():
        raise CommandError(f"--api-key-env {env_name!r} is not an environment variable name")
    config = {
        "base_url": options["base_url"].rstrip("/"),
        "upstream_model": options["upstream_model"] or slug,
    }
    if env_name:
        config["api_key_env"] = env_name
    return config


def _is_slug(value: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value))
