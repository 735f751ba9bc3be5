"""Where notifications go: e-mail through an SMTP server (SendGrid's relay, or any other) and a webhook.

Credentials come only from the environment (:func:`astrid_assets.settings.smtp_server`,
:func:`~astrid_assets.settings.notify_webhook`) and never appear in a message, log line or error: errors
name the server by host and port, the webhook by scheme and host only. A password is sent only over TLS
(implicit, or STARTTLS when the server offers it), except to a server on the loopback interface.
Every message carries the notification's idempotency key (``Message-ID``, ``X-Astrid-Idempotency-Key``;
the webhook's ``Idempotency-Key`` header), so a receiver can drop a duplicate too.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage
from urllib.parse import urlsplit

from astrid_assets import settings
from astrid_assets.notifications.messages import Notification

__all__ = ["EmailChannel", "NotificationError", "WebhookChannel", "configured_channels"]


class NotificationError(RuntimeError):
    """A notification could not be delivered (the message names no credential)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmailChannel:
    """Multipart e-mail (plain text, HTML with the cut-out triplet and light curve inline) over SMTP."""

    name = "email"

    def __init__(self, server: dict, sender: str, recipients: list[str], timeout: float = 30.0):
        self.server, self.sender, self.recipients, self.timeout = server, sender, recipients, timeout

    def __repr__(self) -> str:  # never the password
        return f"EmailChannel({self.server['host']}:{self.server['port']}, to {len(self.recipients)} recipient(s))"

    def message(self, notification: Notification) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = notification.subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Message-ID"] = f"<{notification.key}@astrid>"
        message["X-Astrid-Idempotency-Key"] = notification.key
        message.set_content(notification.text)
        message.add_alternative(notification.html, subtype="html")
        html_part = message.get_payload()[-1]
        for cid, png in notification.images.items():
            html_part.add_related(png, maintype="image", subtype="png", cid=f"<{cid}>", filename=f"{cid}.png")
        return message

    def send(self, notification: Notification) -> None:
        server = self.server
        where = f"SMTP server {server['host']}:{server['port']}"
        try:
            if server["ssl"]:
                client = smtplib.SMTP_SSL(server["host"], server["port"], timeout=self.timeout,
                                          context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(server["host"], server["port"], timeout=self.timeout)
            with client:
                client.ehlo()
                secure = server["ssl"]
                if not secure and client.has_extn("starttls"):
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                    secure = True
                if server.get("user"):
                    if not secure and not _is_loopback(server["host"]):
                        raise NotificationError(f"{where} offers no TLS: the password is not sent in clear")
                    client.login(server["user"], server.get("password") or "")
                client.send_message(self.message(notification))
        except NotificationError:
            raise
        except smtplib.SMTPAuthenticationError as error:
            raise NotificationError(f"{where} refused the login (code {error.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as error:
            raise NotificationError(f"{where}: {type(error).__name__}: {_safe(str(error), server)}") from None


def _safe(text: str, server: dict) -> str:
    """``text`` with the SMTP credentials removed (a server may echo what it was sent)."""
    for secret in (server.get("password"), server.get("user")):
        if secret:
            text = text.replace(secret, "***")
    return text


class WebhookChannel:
    """A JSON POST: the notification's summary, its plain text, and the PNGs base64-encoded."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 30.0):
        self.url, self.timeout = url, timeout
        parts = urlsplit(url)
        self.where = f"webhook {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def __repr__(self) -> str:  # never the URL: it holds the token
        return f"WebhookChannel({self.where})"

    def body(self, notification: Notification) -> dict:
        return {**notification.summary, "text": notification.text,
                "images": {cid: base64.b64encode(png).decode() for cid, png in notification.images.items()}}

    def send(self, notification: Notification) -> None:
        request = urllib.request.Request(
            self.url, data=json.dumps(self.body(notification)).encode(), method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": notification.key})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (configured URL)
                response.read()
        except urllib.error.HTTPError as error:
            raise NotificationError(f"{self.where} answered HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise NotificationError(f"{self.where} unreachable: {type(reason).__name__}") from None


def configured_channels() -> list:
    """The channels the environment configures: e-mail when an SMTP server and recipients are set, the
    webhook when its URL is."""
    channels: list = []
    server, recipients = settings.smtp_server(), settings.notify_to()
    if server and recipients:
        channels.append(EmailChannel(server, settings.notify_from(), recipients))
    webhook = settings.notify_webhook()
    if webhook:
        channels.append(WebhookChannel(webhook))
    return channels
