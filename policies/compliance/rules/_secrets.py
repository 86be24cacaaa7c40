"""Credential detection by value.

A value is reported when it *is* a credential: a URL carrying a password, a string in a known
key or token format, a private key, or a long high-entropy token. The variable's name only adds
context: a literal value under a credential name (DB_PASSWORD, GITHUB_TOKEN, JWT_SIGNING_KEY) is
reported unless the value is plainly not a credential (a number, a boolean, a reference to a
secret store or a mounted file). Names alone never report anything: TOKEN_TTL=3600,
AUTH_MODE=oidc and PASSWORD_MIN_LENGTH=12 are configuration, not secrets.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from itertools import pairwise
from typing import Any
from urllib.parse import unquote, urlsplit

# Formats that are credentials whatever the variable is called.
KEY_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    (
        "an AWS access key id",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}(?![A-Z0-9])"),
    ),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a Slack webhook URL", re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("a Stripe secret key", re.compile(r"\b[sr]k_(?:live|test)_[0-9A-Za-z]{16,}")),
    ("an OpenAI or Anthropic API key", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}")),
    ("a SendGrid API key", re.compile(r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")),
    ("a Twilio API key", re.compile(r"\bSK[0-9a-f]{32}\b")),
    ("an npm token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("a service account key", re.compile(r'"private_key"\s*:\s*"-----BEGIN')),
    ("an Azure storage key", re.compile(r"AccountKey=[A-Za-z0-9+/=]{40,}")),
)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I)
_AUTH_HEADER = re.compile(r"\b(?:Basic|Bearer)\s+[A-Za-z0-9+/=._-]{16,}")
_ASSIGNMENT = re.compile(
    r"(?i)\b([A-Za-z_][A-Za-z0-9_.-]*)\s*[:=]\s*['\"]?([^\s'\";&|]+)"
)  # NAME=value / name: value inside scripts and config text

# Word tokens that make a variable name mean "this is a credential".
CREDENTIAL_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "credential",
        "credentials",
        "privatekey",
        "secretkey",
        "accesskey",
        "authtoken",
        "clientsecret",
    }
)
# "<qualifier> key" pairs that name a key used as a credential.
KEY_QUALIFIERS = frozenset(
    {"api", "access", "secret", "private", "signing", "encryption", "master", "client"}
)
# A last word that makes the name *about* a credential rather than the credential itself.
METADATA_WORDS = frozenset(
    {
        "ttl",
        "length",
        "len",
        "min",
        "max",
        "size",
        "timeout",
        "expiry",
        "expires",
        "expiration",
        "lifetime",
        "seconds",
        "secs",
        "ms",
        "minutes",
        "hours",
        "days",
        "name",
        "names",
        "id",
        "ids",
        "arn",
        "ref",
        "refs",
        "file",
        "files",
        "path",
        "dir",
        "header",
        "enabled",
        "enable",
        "disabled",
        "required",
        "mode",
        "type",
        "policy",
        "rotation",
        "version",
        "prefix",
        "suffix",
        "field",
        "env",
        "location",
        "format",
        "algorithm",
        "algo",
        "endpoint",
        "issuer",
        "audience",
        "scope",
        "scopes",
        "count",
        "bytes",
        "bits",
        "source",
        "provider",
        "backend",
        "store",
        "kind",
        "key",  # only as last word after a metadata-free qualifier pair, handled below
        "uri",
        "url",
        "hint",
        "label",
        "secretname",
        "vault",
        "project",
        "region",
    }
)
# Values that are references to where a secret lives, never the secret.
REFERENCE = re.compile(
    r"^(?:arn:aws[a-z-]*:(?:secretsmanager|ssm|kms):|projects/[^/]+/secrets/|sm://|ssm:|secretsmanager:|"
    r"vault:|ref\+|azurekeyvault|gcp-sm:|/run/secrets/|/var/run/secrets/|/etc/|/mnt/|/secrets?/|file:|"
    r"\$\{[^}]+\}$|\$\([^)]+\)$|\{\{[^}]+\}\}$|%\([^)]+\)s$|<[^>]+>$|offline-plan-secret:)",
    re.I,
)
_BOOL_OR_WORD = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null", "disabled", "enabled"})
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_DIGEST = re.compile(r"(?:sha256|sha512|sha1|md5):[0-9a-f]{32,}", re.I)
_TOKENISH = re.compile(r"^[A-Za-z0-9+/=_.~-]+$")
_WEAK_PASSWORDS = (
    "password",
    "passw0rd",
    "secret",
    "changeme",
    "change_me",
    "letmein",
    "admin",
    "qwerty",
    "123456",
    "welcome",
    "default",
    "postgres",
    "root",
    "example",
    "test",
)


def words(name: str) -> list[str]:
    """A variable name as lower-case words: DB_PASSWORD, dbPassword, db-password -> db, password."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_credential_name(name: str) -> bool:
    """A name that says its value is a credential itself (not its length, lifetime or location)."""
    ws = words(name)
    if not ws:
        return False
    joined = "".join(ws)
    if joined in CREDENTIAL_WORDS:
        return True
    last = ws[-1]
    # ..._KEY after api/access/secret/private/signing/... (API_KEY, JWT_SIGNING_KEY)
    if last == "key" and len(ws) >= 2 and ws[-2] in KEY_QUALIFIERS:
        return True
    if last in METADATA_WORDS:
        return False
    pairs = {a + b for a, b in pairwise(ws)}
    return any(w in CREDENTIAL_WORDS for w in ws) or bool(pairs & CREDENTIAL_WORDS)


def entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _high_entropy_token(value: str) -> bool:
    """A long random-looking token: mixed case and digits, no spaces, not a digest or UUID."""
    if len(value) < 24 or not _TOKENISH.match(value) or _UUID.match(value):
        return False
    if re.fullmatch(r"[0-9a-fA-F]+", value):  # hex: commit SHAs and checksums look like this
        return False
    classes = sum(bool(re.search(p, value)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes == 3 and entropy(value) >= 4.2


def url_password(text: str) -> str | None:
    """The redacted URL when `text` holds a URL with a password in its user info."""
    for match in _URL.finditer(text):
        try:
            parts = urlsplit(match.group(0))
        except ValueError:
            continue
        password = unquote(parts.password or "")
        if password and not REFERENCE.match(password) and not password.startswith(("$", "%", "{")):
            return f"{parts.scheme}://{parts.username or ''}:***@{parts.hostname or ''}"
    return None


def plainly_not_a_secret(value: str) -> bool:
    v = value.strip()
    return (
        not v
        or v.lower() in _BOOL_OR_WORD
        or bool(re.fullmatch(r"-?\d+(?:\.\d+)?[smhdKMG]?i?[Bb]?", v))
        or bool(REFERENCE.match(v))
        or (v.startswith("/") and " " not in v)
    )


def secret_in_value(value: str) -> str | None:
    """What credential `value` holds, judged by the value alone (None when nothing)."""
    for what, pattern in KEY_FORMATS:
        if pattern.search(value):
            return what
    if (redacted := url_password(value)) is not None:
        return f"a URL with an embedded password ({redacted})"
    if _AUTH_HEADER.search(value):
        return "an HTTP Authorization credential"
    stripped = _DIGEST.sub("", value.strip())
    if _high_entropy_token(stripped):
        return "a high-entropy token"
    return None


def secret_in_variable(name: str, value: Any) -> str | None:
    """What credential a NAME=value setting holds; the name adds context to the value."""
    if not isinstance(value, str):
        return None
    found = secret_in_value(value)
    if found is not None:
        return found
    if is_credential_name(name) and not plainly_not_a_secret(value):
        return "a literal value under a credential name"
    return None


def secrets_in_text(text: str) -> Iterator[str]:
    """Credentials inside free text (user data, startup scripts, config files)."""
    if not isinstance(text, str) or not text:
        return
    seen: set[str] = set()
    for what, pattern in KEY_FORMATS:
        if pattern.search(text) and what not in seen:
            seen.add(what)
            yield what
    if (redacted := url_password(text)) is not None:
        yield f"a URL with an embedded password ({redacted})"
    for name, value in _ASSIGNMENT.findall(text):
        if is_credential_name(name) and not plainly_not_a_secret(value) and not value.startswith("$"):
            yield f"{name} assigned a literal value"
            return


def secrets_in_env(env: Mapping[str, Any] | None) -> Iterator[tuple[str, str]]:
    """(name, what) for each variable of an environment map that holds a credential."""
    if not isinstance(env, Mapping):
        return
    for name in env:
        what = secret_in_variable(str(name), env[name])
        if what is not None:
            yield str(name), what


_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)


def weak_password(value: Any) -> str | None:
    """Why a password set in the program is guessable (None when it is not, or not known)."""
    if not isinstance(value, str) or not value or REFERENCE.match(value):
        return None
    if len(value) < 12:
        return f"it is {len(value)} characters long"
    lowered = value.lower()
    plain = lowered.translate(_LEET)
    for word in _WEAK_PASSWORDS:
        if word in lowered or word in plain:
            return f"it is built on the common word {word!r}"
    return None
