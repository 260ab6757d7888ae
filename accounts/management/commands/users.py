from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import TIERS, User
from billing import ledger


class Command(BaseCommand):
    help = "Manage users: `users add EMAIL [--password PW] [--staff] [--credits N] [--tier T]`."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Create a verified user.")
        add.add_argument("email")
        add.add_argument("--password")
        add.add_argument("--staff", action="store_true")
        add.add_argument("--credits", default="0")
        add.add_argument("--tier", default="free", choices=[t for t, _ in TIERS])

    def handle(self, *args, action, **options):
        from allauth.account.models import EmailAddress
        from django.core.exceptions import ValidationError
        from django.core.validators import validate_email

        email = options["email"].strip()
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"{email!r} is not a valid email address") from None
        try:
            credits = ledger.parse_amount(options["credits"])
        except ValueError as exc:
            raise CommandError(f"--credits: {exc}") from None
        if User.objects.filter(email__iexact=email).exists():
            raise CommandError(f"a user with email {email} exists already")
        with transaction.atomic():
            user = User.objects.create_user(
                email=email,
                password=options["password"],
                is_staff=options["staff"],
                tier=options["tier"],
            )
            EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
            ledger.account_for(user)
            if credits:
                ledger.grant(user, credits, reason="operator: users add")
