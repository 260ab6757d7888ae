from billing import ledger


def header(request):
    """The balance shown in every page's header."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    balance, _ = ledger.balances(user)
    return {"header_balance": ledger.fmt(balance)}
