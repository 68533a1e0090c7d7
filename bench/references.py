"""The two references payherald is measured beside, each run as its own process.

``bare``: an ASGI endpoint that only verifies the signature (the official SDK's
``WebhookSignature.verify_header``) and answers 200, under the same uvicorn as payherald:
the ceiling with no durability and no work.

``flask``: the handler the usual tutorials write: ``stripe.Webhook.construct_event``, an
in-memory set for deduplication, and the SMS sent with the Twilio SDK inline, before
answering; served by Flask's threaded server. Nothing is stored: a crash forgets every
event, and a restart sends duplicates.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import stripe

SECRET = os.environ.get("BENCH_SECRET", "")


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    try:
        stripe.WebhookSignature.verify_header(
            body.decode(), headers.get(b"stripe-signature", b"").decode(), SECRET, 300
        )
        status, answer = 200, b'{"received":true}'
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        status, answer = 400, b'{"error":"bad signature"}'
    headers_out = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(answer)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers_out})
    await send({"type": "http.response.body", "body": answer})


def flask_app(twilio_base: str) -> Any:
    from flask import Flask, request
    from twilio.rest import Client

    app = Flask("tutorial")
    seen: set[str] = set()
    client = Client("AC" + "0" * 32, "f" * 32)
    client.api.base_url = twilio_base

    @app.post("/webhook")
    def webhook() -> tuple[str, int]:
        try:
            event = stripe.Webhook.construct_event(
                request.get_data(), request.headers.get("Stripe-Signature", ""), SECRET
            )
        except (ValueError, stripe.SignatureVerificationError):
            return "bad signature", 400
        if event.id in seen:
            return "", 200
        seen.add(event.id)
        if event.type == "payment_intent.succeeded":
            intent = event.data.object
            amount = intent.amount / 100
            client.messages.create(
                to=intent.shipping.phone,
                from_="+15005550006",
                body=f"Payment of ${amount:.2f} received, thank you! Ref: {intent.id}",
            )
        return "", 200

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("bare", "flask"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--twilio", default="http://127.0.0.1:9")
    args = parser.parse_args()
    if args.kind == "bare":
        import uvicorn

        uvicorn.run(
            bare,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    else:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        flask_app(args.twilio).run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
