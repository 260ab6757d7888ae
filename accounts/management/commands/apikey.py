from django.core.management.base import BaseCommand, CommandError

from accounts import keys
from accounts.models import TIERS, User


class Command(BaseCommand):
    help = "Create, list and revoke API keys."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a key; prints it, once.")
        create.add_argument("email")
        create.add_argument("--name", default="default")
        create.add_argument("--tier", choices=[t for t, _ in TIERS])
        listing = sub.add_parser("list", help="One line per key: prefix, name, tier, status.")
        listing.add_argument("email")
        revoke = sub.add_parser("revoke", help="Revoke a key by its secret or 12-character prefix.")
        revoke.add_argument("key_or_prefix")

    def handle(self, *args, action, **options):
        if action == "revoke":
            try:
                key = keys.find_key(options["key_or_prefix"])
            except keys.UnknownKey as exc:
                raise CommandError(str(exc)) from None
            keys.revoke(key)
            return
        user = User.objects.filter(email__iexact=options["email"].strip()).first()
        if user is None:
            raise CommandError(f"no user with email {options['email']}")
        if action == "create":
            _, raw = keys.create_key(user, options["name"], tier=options["tier"])
            self.stdout.write(raw)
        else:
            for key in user.api_keys.order_by("created"):
                self.stdout.write(f"{key.prefix}\t{key.name}\t{key.tier}\t{key.status}")
