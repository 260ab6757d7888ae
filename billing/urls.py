from django.urls import path

from . import views

urlpatterns = [
    path("", views.billing_page, name="billing"),
    path("redeem", views.redeem_code, name="redeem"),
    path("low-balance", views.low_balance, name="low-balance"),
    path("buy", views.buy, name="buy-credits"),
    path("stripe/webhook", views.stripe_webhook, name="stripe-webhook"),
    path("receipts/<uuid:payment_id>/", views.receipt, name="receipt"),
    path("transactions.csv", views.transactions_csv, name="transactions-csv"),
    path("usage.csv", views.usage_csv, name="usage-csv"),
]
