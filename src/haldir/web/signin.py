"""Dashboard sign-in: the operator's API key sealed into a cookie (AES-256-GCM, expiry inside), and the
CSRF tokens bound to that cookie. Stateless: every replica derives the same keys from the log signing key."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haldir.errors import Unauthenticated

COOKIE = "haldir_ui"
LOGIN_COOKIE = "haldir_ui_login"  # a nonce that binds the sign-in form's CSRF token, before any session
SIGNED_IN_FOR = timedelta(hours=8)
_NONCE_BYTES = 12
_AAD = b"haldir dashboard session v1"


class SignedOut(Unauthenticated):
    """No dashboard session, or one that expired, was tampered with, or whose key no longer works."""

    code = "signed_out"


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Seal:
    """Seals and opens session cookies, and makes and checks the CSRF tokens of forms.

    `secret` is key material every replica shares (the log signing key): a cookie sealed by one server
    process opens on any other, and no session table is needed. The key inside is authenticated again on
    every request, so revoking it signs the browser out on its next request.
    """

    __slots__ = ("_aead", "_csrf_key")

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(_derive(secret, b"haldir dashboard cookie v1"))
        self._csrf_key = _derive(secret, b"haldir dashboard csrf v1")

    def __repr__(self) -> str:
        return "Seal(…)"

    def seal(self, api_key: str, *, expires: datetime) -> str:
        payload = json.dumps({"key": api_key, "exp": int(expires.timestamp())}).encode()
        nonce = os.urandom(_NONCE_BYTES)
        return _b64(nonce + self._aead.encrypt(nonce, payload, _AAD))

    def open(self, cookie: str | None, *, now: datetime) -> str:
        """The API key sealed in `cookie`; `SignedOut` when there is none, it was not sealed here, or
        it has expired."""
        if not cookie:
            raise SignedOut("not signed in")
        try:
            raw = _unb64(cookie)
            payload = json.loads(self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD))
            key, expires = payload["key"], payload["exp"]
        except (InvalidTag, ValueError, TypeError, KeyError, binascii.Error):
            raise SignedOut("the sign-in cookie is not valid; sign in again") from None
        if not isinstance(key, str) or type(expires) is not int:
            raise SignedOut("the sign-in cookie is not valid; sign in again")
        if now.timestamp() >= expires:
            raise SignedOut("the sign-in has expired; sign in again")
        return key

    def csrf_token(self, bound_to: str) -> str:
        """The token a form carries: an HMAC of the cookie it belongs to (the session's, or the sign-in
        nonce's), so a token taken from one browser is worthless with another's cookie."""
        return _b64(hmac.new(self._csrf_key, bound_to.encode(), hashlib.sha256).digest())

    def csrf_matches(self, bound_to: str | None, token: str | None) -> bool:
        if not bound_to or not token:
            return False
        return hmac.compare_digest(self.csrf_token(bound_to).encode(), token.encode("utf-8", "replace"))


def login_nonce() -> str:
    return _b64(os.urandom(18))
