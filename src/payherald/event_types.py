"""Stripe event type names, so that a rule with a misspelt one is caught at start."""

from __future__ import annotations

__all__ = ["STRIPE_EVENT_TYPES"]

_GROUPS = {
    "account": "updated application.authorized application.deauthorized external_account.created"
    " external_account.deleted external_account.updated",
    "balance": "available",
    "charge": "captured expired failed pending refunded succeeded updated dispute.closed "
    "dispute.created dispute.funds_reinstated dispute.funds_withdrawn dispute.updated "
    "refund.updated",
    "checkout.session": "async_payment_failed async_payment_succeeded completed expired",
    "coupon": "created deleted updated",
    "credit_note": "created updated voided",
    "customer": "created deleted updated discount.created discount.deleted discount.updated "
    "source.created source.deleted source.expiring source.updated subscription.created "
    "subscription.deleted subscription.paused subscription.pending_update_applied "
    "subscription.pending_update_expired subscription.resumed subscription.trial_will_end "
    "subscription.updated tax_id.created tax_id.deleted tax_id.updated",
    "customer_cash_balance_transaction": "created",
    "invoice": "created deleted finalization_failed finalized marked_uncollectible overdue "
    "overpaid paid payment_action_required payment_failed payment_succeeded sent upcoming "
    "updated voided will_be_due",
    "invoice_payment": "paid",
    "invoiceitem": "created deleted",
    "mandate": "updated",
    "payment_intent": "amount_capturable_updated canceled created partially_funded "
    "payment_failed processing requires_action succeeded",
    "payment_link": "created updated",
    "payment_method": "attached automatically_updated detached updated",
    "payout": "canceled created failed paid reconciliation_completed updated",
    "plan": "created deleted updated",
    "price": "created deleted updated",
    "product": "created deleted updated",
    "promotion_code": "created updated",
    "quote": "accepted canceled created finalized",
    "radar.early_fraud_warning": "created updated",
    "refund": "created failed updated",
    "review": "closed opened",
    "setup_intent": "canceled created requires_action setup_failed succeeded",
    "subscription_schedule": "aborted canceled completed created expiring released updated",
    "tax_rate": "created updated",
    "transfer": "created reversed updated",
}

STRIPE_EVENT_TYPES = frozenset(
    f"{group}.{name}" for group, names in _GROUPS.items() for name in names.split()
)
