"""API keys: loaded from the secret store, held only as SHA-256 digests, compared in constant time.

Keys come from ``AGENT_API_KEYS_FILE`` (a mounted secret, one key per line; the file is
re-read when it changes so a rotated secret takes effect without a restart) and/or
``AGENT_API_KEYS`` (ECS injects secrets only as variables; comma or newline separated).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

from agent_app.config import ConfigError, Settings
from agent_app.contract import Env, api_keys
from agent_app.errors import Unauthorized

RELOAD_CHECK_SECONDS = 5.0


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    """A key's id: a prefix of its digest, safe to log, to key rate limits by, and to store as
    the owner of the sessions and tasks the key creates."""
    return _id(_digest(key))


def _id(digest: bytes) -> str:
    return digest.hex()[:16]


def _parse(text: str, where: str) -> list[bytes]:
    try:
        return [_digest(key) for key in api_keys(text)]
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


class ApiKeys:
    def __init__(self, *, file: Path | None, inline: str | None) -> None:
        self.file = file
        self.inline = inline
        self._mtime = 0.0
        self._checked = 0.0
        self._digests: list[bytes] = []
        self._load()

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        inline = settings.api_keys.get_secret_value() if settings.api_keys else None
        return cls(file=settings.api_keys_file, inline=inline)

    def _load(self) -> None:
        digests: list[bytes] = []
        if self.inline:
            digests += _parse(self.inline, Env.API_KEYS.value)
        if self.file:
            where = f"{Env.API_KEYS_FILE.value} ({self.file})"
            try:
                self._mtime = self.file.stat().st_mtime
                digests += _parse(self.file.read_text(encoding="utf-8"), where)
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
        if not digests:
            raise ConfigError(
                f"no API keys: set {Env.API_KEYS_FILE.value} to a file with one key per line, "
                f"or {Env.API_KEYS.value} to comma-separated keys"
            )
        self._digests = digests

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self.file or now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        try:
            if self.file.stat().st_mtime != self._mtime:
                self._load()
        except (OSError, ConfigError):
            pass  # keep serving with the last good keys; a half-written secret must not lock everyone out

    def verify(self, token: str | None) -> str:
        """The key's id (a digest prefix, safe to log and to key rate limits by) or 401."""
        if not token:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        self._maybe_reload()
        digest = _digest(token)
        match = False
        for known in self._digests:  # no early exit: timing does not reveal which key matched
            match |= hmac.compare_digest(digest, known)
        if not match:
            raise Unauthorized("invalid API key")
        return _id(digest)
