"""The built-in rules: the catalogue that runs when the rules file changes nothing.

Confirmations, failed payments and dunning, refunds, disputes, the fraud check (see
``fraud``), subscription changes and renewal reminders (see ``renewals``), payment links
texted (see ``paylinks``), a welcome and
high-value alerts; a team's rules send
only to a team the rules file defines, and ``dispute_customer`` is off. ``payherald.toml``
changes any field of one by its name, turns it off, or adds rules (see ``config``); what a
rule is, and how an event is matched to rules, is in ``rules``.
"""

from __future__ import annotations

from payherald.api_versions import REFUNDS_HAVE_EVENTS
from payherald.attribution import CREDITING_EVENTS, PAYLINK_RULE
from payherald.rules import Rule

__all__ = ["BUILTIN_RULES"]

_PREFIX = "{% if business %}{{ business }}: {% endif %}"
_DAY = 86400
# One refund, one message: refund.created tells it. Before API version 2024-10-28 a charge's
# refund sent no refund.created, only charge.refunded, which then tells it; from that version
# on charge.refunded is passed over (it does not name the refund, so the two could not be
# told to be one). The daily digest and the dashboard count refunds by the same test
# (subjects.tells_refund): change both together.
_REFUND_EVENT = (
    "event_type == 'refund.created' or "
    f"(api_version != '' and api_version < '{REFUNDS_HAVE_EVENTS}')"
)


BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        name="payment_confirmation",
        description="Customer: one confirmation per payment, whichever events report it.",
        events=frozenset(
            {
                "payment_intent.succeeded",
                "charge.succeeded",
                "checkout.session.completed",
                "invoice.paid",
                "invoice.payment_succeeded",
            }
        ),
        subject="payment",
        when="amount != 0",  # a $0 invoice (a trial, a full coupon) is not a payment
        quiet_hours_exempt=True,  # a receipt for what the customer has just done
        template=_PREFIX + "Payment of {{ amount | money(currency) }} received, thank you!"
        "{% if order %} Order {{ order }}.{% endif %} Ref: {{ reference }}",
        fallback=_PREFIX + "Your payment was received, thank you! Ref: {{ reference }}",
    ),
    Rule(
        name="payment_failed",
        description="Customer: a declined payment, with the reason and a link.",
        events=frozenset({"payment_intent.payment_failed", "charge.failed"}),
        subject="failed_attempt",
        # An invoice's failed payment is told by invoice_payment_failed, with its link.
        not_for_invoices=True,
        unless_paid=True,
        template=_PREFIX + "Your payment of {{ amount | money(currency) }} did not go through: "
        "{{ decline_reason }}.{% if fix_url %} Update your card: {{ fix_url }}"
        "{% else %} Please try another card.{% endif %}",
        fallback=_PREFIX + "Your payment did not go through: {{ decline_reason }}. "
        "Please try another card.",
    ),
    # Dunning: three steps, one sequence per invoice (Stripe's retries add nothing), each
    # sent unless the invoice is paid, voided or uncollectible by then (see dunning).
    Rule(
        name="invoice_payment_failed",
        description="Customer: an invoice could not be collected; first dunning message.",
        events=frozenset({"invoice.payment_failed"}),
        subject="object",
        sequence="dunning",
        unless_paid=True,
        template=_PREFIX + "We could not collect {{ amount | money(currency) }}"
        "{% if invoice_number %} for invoice {{ invoice_number }}{% endif %}: "
        "{{ decline_reason }}.{% if fix_url %} Pay or update your card: {{ fix_url }}"
        "{% endif %}",
        fallback=_PREFIX + "We could not collect your payment.{% if fix_url %} Pay or update "
        "your card: {{ fix_url }}{% endif %}",
    ),
    Rule(
        name="dunning_reminder",
        description="Customer: the invoice is still unpaid 3 days after its payment failed.",
        events=frozenset({"invoice.payment_failed"}),
        subject="object",
        sequence="dunning",
        after=3 * _DAY,
        unless_paid=True,
        template=_PREFIX + "Reminder: {{ amount | money(currency) }}"
        "{% if invoice_number %} for invoice {{ invoice_number }}{% endif %} is still unpaid."
        "{% if fix_url %} Pay or update your card: {{ fix_url }}{% endif %}",
        fallback=_PREFIX + "Reminder: your payment is still due.{% if fix_url %} Pay or "
        "update your card: {{ fix_url }}{% endif %}",
    ),
    Rule(
        name="dunning_final",
        description="Customer: final notice, 7 days after the invoice's payment failed.",
        events=frozenset({"invoice.payment_failed"}),
        subject="object",
        sequence="dunning",
        after=7 * _DAY,
        unless_paid=True,
        template=_PREFIX + "Final notice: {{ amount | money(currency) }}"
        "{% if invoice_number %} for invoice {{ invoice_number }}{% endif %} is still unpaid"
        " and your subscription may be cancelled."
        "{% if fix_url %} Pay or update your card: {{ fix_url }}{% endif %}",
        fallback=_PREFIX + "Final notice: your payment is still due and your subscription "
        "may be cancelled.{% if fix_url %} Pay or update your card: {{ fix_url }}{% endif %}",
    ),
    Rule(
        name="refund_customer",
        description="Customer: refund acknowledgement with amount and timeline.",
        events=frozenset({"refund.created", "charge.refunded"}),
        when=_REFUND_EVENT,
        subject="refund",
        template=_PREFIX + "We have refunded {{ refund_amount | money(currency) }} to your "
        "card. It usually appears within 5-10 business days. Ref: {{ reference }}",
    ),
    Rule(
        name="refund_team",
        description="Finance: a refund was issued.",
        events=frozenset({"refund.created", "charge.refunded"}),
        when=_REFUND_EVENT,
        to="team:finance",
        channels=("slack", "sms", "email"),
        subject="refund",
        template="Refund issued: {{ refund_amount | money(currency) }}"
        "{% if customer_name %} to {{ customer_name }}{% endif %}. Ref: {{ reference }}",
    ),
    Rule(
        name="dispute_alert",
        description="Finance: urgent dispute alert with reason and evidence deadline.",
        events=frozenset({"charge.dispute.created"}),
        to="team:finance",
        channels=("sms", "slack", "email"),
        template="URGENT: dispute opened on {{ amount | money(currency) }} ({{ dispute_reason }})."
        " Evidence due {{ evidence_due | date }}. Dispute {{ reference }}",
        fallback="URGENT: a dispute was opened. Dispute {{ reference }}",
    ),
    Rule(
        name="dispute_customer",
        description="Customer: a dispute was opened (off by default).",
        events=frozenset({"charge.dispute.created"}),
        enabled=False,
        template=_PREFIX
        + "We received a dispute from your bank for {{ amount | money(currency) }}."
        " Reply or contact us if this was a mistake.",
    ),
    # The fraud check (see fraud): the customer's YES approves the review, NO refunds.
    Rule(
        name="fraud_check",
        description="Customer: Stripe suspects a payment; YES approves it, NO refunds it.",
        events=frozenset({"radar.early_fraud_warning.created", "review.opened"}),
        # A warning that can no longer be acted on (refunded or disputed already) asks
        # nothing.
        when="event_type != 'radar.early_fraud_warning.created' or object.actionable",
        channels=("sms", "whatsapp"),  # a reply has to come back
        subject="payment",  # a review and a warning about one payment ask once
        quiet_hours_exempt=True,  # about a payment made just now, and the answer is urgent
        template=_PREFIX + "Did you make a payment of {{ amount | money(currency) }}"
        "{% if merchant %} to {{ merchant }}{% endif %}? Reply YES if you made this payment, "
        "NO if not.",
        fallback=_PREFIX + "Did you make a recent payment{% if merchant %} to {{ merchant }}"
        "{% endif %}? Reply YES if you made this payment, NO if not.",
    ),
    Rule(
        name="fraud_reported",
        description="Finance: a customer said NO to the fraud check.",
        events=frozenset(),  # sent by the fraud check's answer (see fraud)
        to="team:finance",
        channels=("sms", "slack", "email"),
        template="Fraud reported: the customer says they did not make the payment of "
        "{{ amount | money(currency) }} ({{ object.payment_intent or object.charge }}). "
        "{{ object.outcome }}",
        fallback="Fraud reported on {{ object.payment_intent or object.charge }}. "
        "{{ object.outcome }}",
    ),
    Rule(
        name="fraud_unanswered",
        description="Finance: a customer did not answer the fraud check in time.",
        events=frozenset(),  # sent by the fraud check's timeout (see fraud)
        to="team:finance",
        channels=("sms", "slack", "email"),
        template="Fraud check unanswered: {{ amount | money(currency) }} "
        "({{ object.payment_intent or object.charge }}). {{ object.outcome }} Look at it in "
        "the Stripe dashboard.",
        fallback="Fraud check unanswered on {{ object.payment_intent or object.charge }}. "
        "{{ object.outcome }} Look at it in the Stripe dashboard.",
    ),
    Rule(
        name="fraud_unapproved",
        description="Finance: a customer said YES, but the review could not be approved.",
        events=frozenset(),  # sent by the fraud check's answer (see fraud)
        to="team:finance",
        channels=("sms", "slack", "email"),
        template="Fraud check confirmed by the customer but not acted on: "
        "{{ amount | money(currency) }} ({{ object.payment_intent or object.charge }}). "
        "{{ object.outcome }}",
        fallback="Fraud check confirmed by the customer but not acted on: "
        "{{ object.payment_intent or object.charge }}. {{ object.outcome }}",
    ),
    Rule(
        name="subscription_cancelled",
        description="Customer: subscription cancelled, with the effective date.",
        events=frozenset({"customer.subscription.deleted"}),
        template=_PREFIX + "Your {{ plan_name }} subscription is cancelled, effective "
        "{{ cancel_date | date }}. We are sorry to see you go.",
        fallback=_PREFIX + "Your subscription is cancelled.",
    ),
    Rule(
        name="trial_ending",
        description="Customer: the trial ends soon.",
        events=frozenset({"customer.subscription.trial_will_end"}),
        subject="renewal",  # one reminder with the scan's (see renewals)
        template=_PREFIX + "Your {{ plan_name }} trial ends on {{ trial_end | date }}. "
        "Your card will then be charged {{ amount | money(currency) }}.",
        fallback=_PREFIX + "Your trial ends soon.",
    ),
    Rule(
        name="renewal_reminder",
        description="Customer: the subscription renews soon.",
        events=frozenset({"invoice.upcoming"}),
        subject="renewal",
        template=_PREFIX + "Reminder: your {{ plan_name }} subscription renews on "
        "{{ renewal_date | date }} for {{ amount | money(currency) }}.",
        fallback=_PREFIX + "Reminder: your subscription renews soon.",
    ),
    Rule(
        name="renewal_card_expiring",
        description="Customer: the subscription renews soon, after the card expires.",
        events=frozenset(),  # chosen by the renewal scan, for a card it read (see renewals)
        subject="renewal",
        template=_PREFIX + "Your {{ plan_name }} subscription renews on "
        "{{ renewal_date | date }} for {{ amount | money(currency) }}, but your card"
        "{% if card_last4 %} ending {{ card_last4 }}{% endif %} expires before then."
        "{% if fix_url %} Update your card: {{ fix_url }}{% else %} Please update your card."
        "{% endif %}",
        fallback=_PREFIX + "Your card expires before your subscription renews."
        "{% if fix_url %} Update your card: {{ fix_url }}{% else %} Please update your card."
        "{% endif %}",
    ),
    Rule(
        name="plan_changed",
        description="Customer: the subscription moved to another plan.",
        events=frozenset({"customer.subscription.updated"}),
        subject="event",
        when="plan_changed",
        template=_PREFIX + "Your plan changed from {{ previous_plan_name }} to {{ plan_name }}: "
        "{{ amount | money(currency) }} per {{ interval }}.",
    ),
    Rule(
        name="welcome",
        description="Customer: welcome on the first successful payment.",
        events=frozenset(
            {"payment_intent.succeeded", "checkout.session.completed", "invoice.paid"}
        ),
        subject="payment",
        when="amount != 0",
        first_payment_only=True,
        template=_PREFIX + "Welcome{% if first_name %}, {{ first_name }}{% endif %}! "
        "Thank you for your first payment{% if plan_name %} for {{ plan_name }}{% endif %}.",
    ),
    Rule(
        name=PAYLINK_RULE,
        description="Customer: a payment link payherald made (`payherald paylink send`).",
        events=frozenset(),  # made by payherald, not by a Stripe event (see paylinks)
        reads=CREDITING_EVENTS,  # what credits a payment to the text (see attribution)
        channels=("sms",),
        template=_PREFIX + "Pay {{ amount | money(currency) }}"
        "{% if description %} for {{ description }}{% endif %} here: {{ paylink_url }}",
        fallback=_PREFIX + "Pay{% if description %} for {{ description }}{% endif %} here: "
        "{{ paylink_url }}",
    ),
    Rule(
        name="high_value_alert",
        description="Finance: a payment above the currency's threshold.",
        events=frozenset(
            {
                "payment_intent.succeeded",
                "charge.succeeded",
                "checkout.session.completed",
                "invoice.paid",
            }
        ),
        to="team:finance",
        channels=("sms", "slack", "email"),
        subject="payment",
        when="high_value_threshold is not none and amount is number "
        "and amount >= high_value_threshold",
        template="High-value payment: {{ amount | money(currency) }}"
        "{% if customer_name %} from {{ customer_name }}{% endif %}. Ref: {{ reference }}",
    ),
)
