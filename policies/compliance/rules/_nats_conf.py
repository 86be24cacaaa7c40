"""A reader for nats-server's configuration format, and NATS subject matching.

The format (nats-server's conf package) is a superset of JSON: maps in braces, arrays in
brackets, keys and values separated by ``:``, ``=`` or whitespace, entries by newlines, commas
or semicolons, ``#`` and ``//`` comments, quoted or bare strings, numbers with size suffixes,
booleans, ``$VARIABLE`` references and ``include``. Bare values are kept as strings (numbers and
booleans are converted), variables are resolved from earlier keys where possible and kept as
``$NAME`` otherwise, and ``include`` directives are kept as ``{"include": path}`` entries:
the checks only need the authorization blocks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class NatsConfError(ValueError):
    """The text is not a nats-server configuration."""


_BARE_END = set(" \t\r\n,;}]#")
_KEY_END = set(" \t\r\n=:{[")
_BOOL = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.vars: dict[str, Any] = {}

    def error(self, what: str) -> NatsConfError:
        line = self.s.count("\n", 0, self.i) + 1
        return NatsConfError(f"line {line}: {what}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip(self, newlines: bool = True) -> None:
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in " \t\r" or (newlines and ch in "\n,;"):
                self.i += 1
            elif ch == "#" or self.s.startswith("//", self.i):
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end < 0 else end
            else:
                return

    def quoted(self) -> str:
        quote = self.s[self.i]
        self.i += 1
        out = []
        while self.i < len(self.s) and self.s[self.i] != quote:
            ch = self.s[self.i]
            if ch == "\\" and quote == '"' and self.i + 1 < len(self.s):
                self.i += 1
                ch = {"n": "\n", "t": "\t", "r": "\r"}.get(self.s[self.i], self.s[self.i])
            out.append(ch)
            self.i += 1
        if self.i >= len(self.s):
            raise self.error("unterminated string")
        self.i += 1
        return "".join(out)

    def key(self) -> str:
        if self.peek() in "\"'":
            return self.quoted()
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in _KEY_END:
            self.i += 1
        if start == self.i:
            raise self.error(f"expected a key, found {self.peek()!r}")
        return self.s[start : self.i]

    def body(self, closing: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            self.skip()
            if self.peek() == closing:
                self.i += 1
                return out
            if not self.peek():
                if closing:
                    raise self.error(f"missing {closing!r}")
                return out
            key = self.key()
            self.skip(newlines=False)
            if key == "include":
                out.setdefault("include", []).append(self.bare())
                continue
            if self.peek() in "=:":
                self.i += 1
                self.skip(newlines=False)
            value = self.value()
            out[key] = value
            if not closing:
                self.vars[key] = value

    def array(self) -> list[Any]:
        out: list[Any] = []
        while True:
            self.skip()
            if self.peek() == "]":
                self.i += 1
                return out
            if not self.peek():
                raise self.error("missing ']'")
            out.append(self.value())

    def bare(self) -> str:
        if self.peek() in "\"'":
            return self.quoted()
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in _BARE_END:
            self.i += 1
        return self.s[start : self.i].strip()

    def value(self) -> Any:
        ch = self.peek()
        if ch == "{":
            self.i += 1
            return self.body("}")
        if ch == "[":
            self.i += 1
            return self.array()
        if ch in "\"'":
            return self.quoted()
        word = self.bare()
        if not word:
            raise self.error("expected a value")
        if word.startswith("$"):
            return self.vars.get(word[1:], word)
        if word.lower() in _BOOL:
            return _BOOL[word.lower()]
        if _NUMBER.match(word):
            return float(word) if "." in word else int(word)
        return word


def parse(text: str) -> dict[str, Any]:
    """The configuration as nested dicts and lists."""
    return _Parser(text).body("")


def looks_like_server_conf(conf: Mapping[str, Any]) -> bool:
    return any(k in conf for k in ("port", "listen", "jetstream", "authorization", "accounts", "cluster"))


# -- subjects ----------------------------------------------------------------------------------


def _tokens(subject: str) -> list[str]:
    return subject.split(".")


def covers(pattern: str, subject: str) -> bool:
    """Every subject ``subject`` (itself possibly a wildcard) matches is matched by ``pattern``."""
    p, s = _tokens(pattern), _tokens(subject)
    for i, token in enumerate(p):
        if token == ">":
            return i < len(s)
        if i >= len(s):
            return False
        if token == "*":
            if s[i] == ">":
                return False
            continue
        if token != s[i]:
            return False
    return len(p) == len(s)


def intersects(a: str, b: str) -> bool:
    """Some subject matches both patterns."""
    x, y = _tokens(a), _tokens(b)
    for i in range(max(len(x), len(y)) + 1):
        xa = x[i] if i < len(x) else None
        yb = y[i] if i < len(y) else None
        if xa == ">":
            return yb is not None  # ">" stands for one token or more
        if yb == ">":
            return xa is not None
        if xa is None or yb is None:
            return xa is None and yb is None
        if xa != yb and "*" not in (xa, yb):
            return False
    return True


def _as_rules(block: Any) -> tuple[list[str], list[str]]:
    """(allow, deny) of one direction: a subject, a list of subjects, or {allow, deny}."""
    if block is None:
        return [], []
    if isinstance(block, str):
        return [block], []
    if isinstance(block, list):
        return [str(x) for x in block], []
    if isinstance(block, Mapping):
        allow, deny = block.get("allow", []), block.get("deny", [])
        return (
            [str(x) for x in (allow if isinstance(allow, list) else [allow])],
            [str(x) for x in (deny if isinstance(deny, list) else [deny])],
        )
    return [], []


def permitted(permissions: Mapping[str, Any] | None, direction: str, subject: str) -> bool:
    """``subject`` (possibly a wildcard) is wholly allowed in ``direction`` ("publish" or
    "subscribe"). No permissions, or an empty allow list, allows everything (as nats-server)."""
    if permissions is None:
        return True
    allow, deny = _as_rules(permissions.get(direction))
    if any(intersects(d, subject) for d in deny):
        return False
    return not allow or any(covers(a, subject) for a in allow)


def users(conf: Mapping[str, Any]) -> dict[str, Mapping[str, Any] | None] | None:
    """User name -> permissions (None: unrestricted) of every client the server authenticates;
    None when the server authenticates no client at all."""
    found: dict[str, Mapping[str, Any] | None] = {}
    blocks: list[Mapping[str, Any]] = []
    auth = conf.get("authorization")
    if isinstance(auth, Mapping):
        blocks.append(auth)
    accounts = conf.get("accounts")
    if isinstance(accounts, Mapping):
        blocks += [a for a in accounts.values() if isinstance(a, Mapping)]
    authenticated = False
    for block in blocks:
        default = block.get("default_permissions")
        if block.get("user") or block.get("token"):
            authenticated = True
            found[str(block.get("user") or "")] = None
        for u in block.get("users") or []:
            if not isinstance(u, Mapping):
                continue
            authenticated = True
            name = str(u.get("user") or u.get("nkey") or "")
            perms = u.get("permissions")
            found[name] = (
                perms if isinstance(perms, Mapping) else default if isinstance(default, Mapping) else None
            )
    return found if authenticated else None
