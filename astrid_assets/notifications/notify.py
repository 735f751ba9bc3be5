"""A night's notifications: packets through the filters, each (object, filter) sent once, whatever the re-runs.

The idempotency key of an (object, filter) (:func:`idempotency_key`) is claimed in the table
``notifications_sent`` (not nightly: a re-run never deletes it) *before* anything is sent: a key already
there means the object was notified for that filter, on this night or an earlier one, and nothing is
sent. A claim whose delivery fails is released, so a later run tries again; a process that dies between
its claim and the end of the delivery leaves the key claimed (``sending``): at most once, never twice.
Of an object's packets that match a filter on one night, the first (earliest detection) is sent.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from astrid_assets.io.schema import metadata, notifications, notifications_sent
from astrid_assets.io.tables import engine_for
from astrid_assets.notifications.filters import NotificationFilter
from astrid_assets.notifications.messages import render

__all__ = ["idempotency_key", "notify_night", "sent_keys"]


def idempotency_key(object_id: str, filter_name: str) -> str:
    """The key of notifying ``object_id`` for the filter ``filter_name`` (stable across nights and re-runs)."""
    return hashlib.sha256(f"astrid-notification/1/{filter_name}/{object_id}".encode()).hexdigest()[:40]


def _ensure_table(url: str) -> None:
    with engine_for(url).begin() as connection:
        metadata.create_all(connection, tables=[notifications_sent])


def _claim(url: str, row: dict) -> bool:
    """Insert the key's row; False when it is already there (already notified)."""
    try:
        with engine_for(url).begin() as connection:
            connection.execute(notifications_sent.insert(), [row])
        return True
    except IntegrityError:
        return False


def sent_keys(url: str) -> pd.DataFrame:
    """Every notification recorded as sent or being sent (the ``notifications_sent`` table)."""
    _ensure_table(url)
    with engine_for(url).connect() as connection:
        return pd.read_sql(notifications_sent.select(), connection)


def notify_night(
    night: str, packets: list[dict], filters: tuple[NotificationFilter, ...], channels: list, url: str,
    enabled: bool = True, log=None,
) -> pd.DataFrame:
    """Send the night's notifications; one ``notifications`` row per (object, filter) matched.

    Parameters
    ----------
    night : str
        The night, ``YYYY-MM-DD``.
    packets : list of dict
        The night's alert packets (as read from its Avro file).
    filters : tuple of NotificationFilter
        The filters (:func:`~astrid_assets.notifications.filters.load_filters`).
    channels : list
        :class:`~astrid_assets.notifications.channels.EmailChannel` / ``WebhookChannel`` objects.
    url : str
        SQLAlchemy URL of the database holding ``notifications_sent``.
    enabled : bool
        The switch: False records the matches as ``disabled`` and sends nothing.
    log : logging.Logger-like, optional
        Gets one line per notification sent or failed (object, filter, channels: never a credential).

    Returns
    -------
    pandas.DataFrame
        The ``notifications`` rows: ``status`` ``sent``, ``already_sent`` (the key was there), ``disabled``,
        ``no_channel`` or ``failed`` (with the ``problem``).
    """
    columns = list(notifications.c.keys())
    matched: dict[tuple[str, str], dict] = {}
    for packet in sorted(packets, key=lambda p: (p["candidate"]["jd"], p["candid"])):
        for notification_filter in filters:
            pair = (packet["objectId"], notification_filter.name)
            if pair not in matched and notification_filter.matches(packet):
                matched[pair] = packet
    if not matched:
        return pd.DataFrame(columns=columns)
    _ensure_table(url)
    names = ",".join(channel.name for channel in channels)
    rows = []
    for (object_id, filter_name), packet in matched.items():
        key = idempotency_key(object_id, filter_name)
        row = {"night": night, "object_id": object_id, "candid": packet["candid"], "filter_name": filter_name,
               "idempotency_key": key, "channels": names or None, "problem": None}
        rows.append(row)
        if not enabled:
            row["status"] = "disabled"
            continue
        if not channels:
            row["status"] = "no_channel"
            continue
        claim = {"idempotency_key": key, "object_id": object_id, "filter_name": filter_name, "night": night,
                 "candid": packet["candid"], "channels": names, "status": "sending",
                 "sent_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if not _claim(url, claim):
            row["status"] = "already_sent"
            continue
        notification = render(packet, filter_name, night, key)
        problems = []
        delivered = []
        for channel in channels:
            try:
                channel.send(notification)
                delivered.append(channel.name)
            except Exception as error:  # one channel failing does not stop the others
                problems.append(str(error))
        with engine_for(url).begin() as connection:
            if delivered:
                connection.execute(update(notifications_sent).where(notifications_sent.c.idempotency_key == key)
                                   .values(status="sent", channels=",".join(delivered)))
            else:  # nothing went out: release the claim so that a later run tries again
                connection.execute(delete(notifications_sent).where(notifications_sent.c.idempotency_key == key))
        row["status"] = "sent" if delivered else "failed"
        row["channels"] = ",".join(delivered) or names
        row["problem"] = "; ".join(problems) or None
        if log is not None:
            message = f"notification {filter_name} / {object_id}: {row['status']} ({row['channels']})"
            (log.warning if problems else log.info)(message + (f": {row['problem']}" if problems else ""))
    return pd.DataFrame(rows).reindex(columns=columns)
