from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from billing import ledger


class Command(BaseCommand):
    help = "Grant credits or show a balance."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        grant = sub.add_parser("grant", help="Add credits to an account (a ledger grant).")
        grant.add_argument("email")
        grant.add_argument("amount")
        grant.add_argument("--reason", default="")
        balance = sub.add_parser("balance", help="Print an account's balance.")
        balance.add_argument("email")

    def handle(self, *args, action, **options):
        user = User.objects.filter(email__iexact=options["email"].strip()).first()
        if user is None:
            raise CommandError(f"no user with email {options['email']}")
        if action == "grant":
            try:
                amount = ledger.parse_amount(options["amount"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            reason = options["reason"] or "operator grant"
            self.stdout.write(ledger.fmt(ledger.grant(user, amount, reason=f"operator: {reason}")))
        else:
            self.stdout.write(ledger.fmt(ledger.balances(user)[0]))
