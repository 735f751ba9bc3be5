"""Notifications of notable transients: filters on alert packets (:mod:`.filters`), messages from templates
(:mod:`.messages`), e-mail and webhook channels (:mod:`.channels`) and once-only delivery (:mod:`.notify`).
No Dagster import; the asset is :mod:`astrid_assets.defs.packets`."""

from astrid_assets.notifications.channels import EmailChannel, NotificationError, WebhookChannel, configured_channels
from astrid_assets.notifications.filters import DEFAULT_FILTERS, NotificationFilter, is_rising, load_filters
from astrid_assets.notifications.messages import Notification, render
from astrid_assets.notifications.notify import idempotency_key, notify_night, sent_keys

__all__ = [
    "DEFAULT_FILTERS", "EmailChannel", "Notification", "NotificationError", "NotificationFilter", "WebhookChannel",
    "configured_channels", "idempotency_key", "is_rising", "load_filters", "notify_night", "render", "sent_keys",
]
