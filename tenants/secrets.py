"""Encryption at rest of stored Twilio secrets, with Fernet (``cryptography``): AES-128-CBC
plus HMAC-SHA256, authenticated, so a tampered or foreign ciphertext fails to decrypt
instead of yielding garbage. The key is ``CALLREC_SECRETS_KEY``."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from calls.errors import CallrecError
from config.settings import Settings


class SecretsUnreadable(CallrecError):
    """A stored secret does not decrypt with the configured key (key rotated or wrong):
    an operator's problem, answered 503 so callers retry once it is fixed."""

    status_code = 503


def new_key() -> str:
    return Fernet.generate_key().decode()


class SecretBox:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretsUnreadable(
                "a stored Twilio secret does not decrypt with CALLREC_SECRETS_KEY"
            ) from None


def secret_box(settings: Settings) -> SecretBox | None:
    """The box of ``CALLREC_SECRETS_KEY``, None when it is not configured."""
    key = settings.twilio.secrets_key
    return SecretBox(key) if key else None
