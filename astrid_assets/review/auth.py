"""Who is signed in to the scanning page, and that every form was sent by the page itself.

* **Passwords** are hashed with scrypt (:func:`hashlib.scrypt`, RFC 7914; n = 2¹⁴, r = 8, p = 1, a
  16-byte random salt) and stored as ``scrypt$n$r$p$salt$hash`` (base64) in ``people.password_hash``;
  they are compared in constant time. A person is added with ``astrid person NAME``.
* **Sessions** are Starlette's signed cookies (itsdangerous; key ``ASTRID_REVIEW_SECRET``, else random
  per process), ``HttpOnly`` and ``SameSite=Lax``; they hold the person's name and the CSRF token.
* **A trusted proxy** (``ASTRID_REVIEW_USER_HEADER``, e.g. ``X-Forwarded-User``) may name the person
  instead: the header is believed only from a peer listed in ``ASTRID_REVIEW_TRUSTED_PROXIES`` (hosts,
  addresses or CIDR networks) and ignored from anyone else. A person it names for the first time is
  added as a labeller, without a password.
* **CSRF**: every form carries ``csrf_token``, a random token kept in the session (the synchronizer-token
  pattern); a POST without it, or with another, is refused with 403 — the sign-in form included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time

__all__ = ["CSRF_FIELD", "csrf_token", "hash_password", "is_trusted_proxy", "valid_csrf", "verify_password"]

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_BYTES = 2**14, 8, 1, 32
CSRF_FIELD = "csrf_token"
_RESOLVED: dict[str, tuple[float, set[str]]] = {}
RESOLVE_TTL_S = 60.0


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` of ``password`` with a fresh random salt."""
    if not password:
        raise ValueError("a password cannot be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_BYTES)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (False for a person without a password)."""
    if not stored or not password:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def csrf_token(session: dict) -> str:
    """The session's CSRF token, made on first use."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def valid_csrf(session: dict, sent: str | None) -> bool:
    """Whether the token a form sent is the session's."""
    expected = session.get(CSRF_FIELD)
    return bool(expected and sent) and hmac.compare_digest(str(expected), str(sent))


def _addresses(host: str) -> set[str]:
    """The addresses of ``host`` (cached for :data:`RESOLVE_TTL_S`: a proxy container may restart)."""
    cached = _RESOLVED.get(host)
    if cached and time.monotonic() - cached[0] < RESOLVE_TTL_S:
        return cached[1]
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        found = set()
    _RESOLVED[host] = (time.monotonic(), found)
    return found


def is_trusted_proxy(peer: str | None, trusted: list[str]) -> bool:
    """Whether the peer address ``peer`` is one of ``trusted`` (addresses, CIDR networks or host names)."""
    if not peer or not trusted:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for entry in trusted:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            if peer in _addresses(entry):
                return True
    return False
