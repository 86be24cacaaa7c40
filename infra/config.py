"""Load and validate a stack's ``skyfleet:`` config into a StackSpec, all problems at once.

The same function serves the real engine (config from the environment Pulumi sets) and the
offline plan (config read from ``stacks/Pulumi.<stack>.yaml``), so a config that fails offline
fails the same way under ``pulumi up``. Errors name the stack file, the key path (with its
line when the file is at hand), what was given and what is expected. Secret values are never
echoed.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from infra.spec import MODELS, NAMESPACE, SECRET_KEYS, StackSpec, Target, parse_spec

STACK_CONFIG_DIR = "stacks"


@dataclass(frozen=True)
class Problem:
    key: str  # skyfleet:app.replicas.min
    given: str
    expected: str
    line: int | None = None

    def render(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"  - {self.key}{where}: given {self.given}; expected {self.expected}"


class SpecError(pulumi.RunError):
    """A stack's config is invalid. Nothing was registered. A ``RunError``: the engine prints
    its message, naming the file, keys and lines, without a Python traceback."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        plural = "s" if n != 1 else ""
        head = f"{self.source}: {n} problem{plural} in the {NAMESPACE}: config; nothing was created"
        return "\n".join([head, *(p.render() for p in self.problems)])


def stack_file(stack: str, project_dir: Path | str = ".") -> Path:
    return Path(project_dir) / STACK_CONFIG_DIR / f"Pulumi.{stack}.yaml"


def parse_engine_value(raw: str) -> Any:
    """Config values reach a program as strings; objects and arrays as JSON."""
    text = raw.strip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return raw
    return raw


def load_spec(
    config: Mapping[str, Any],
    secret_keys: Collection[str],
    *,
    source: str,
    yaml_text: str | None = None,
) -> StackSpec:
    """Validate ``config`` (``ns:key`` -> value) into a StackSpec or raise SpecError.

    ``secret_keys`` are the config keys the engine marks secret. ``yaml_text`` (the stack
    file) lets problems carry line numbers.
    """
    lines = _LineIndex(yaml_text)
    prefix = f"{NAMESPACE}:"
    data: dict[str, Any] = {}
    problems: list[Problem] = []
    for full_key, value in config.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        data[key] = parse_engine_value(value) if isinstance(value, str) else value
        if key in SECRET_KEYS and full_key not in secret_keys:
            problems.append(
                Problem(
                    key=full_key,
                    given="a plain-text value (not shown)",
                    expected=f"a Pulumi secret: pulumi config set --secret {full_key} <value>",
                    line=lines.find((full_key,)),
                )
            )
    try:
        spec = parse_spec(data)
    except ValidationError as exc:
        problems.extend(_from_validation(exc, data, lines))
        spec = None
    if problems or spec is None:
        raise SpecError(source, problems)
    return spec


def load_stack_file(path: Path) -> StackSpec:
    """Offline: read a stack file as the engine would hand it to the program."""
    config, secret_keys, text = read_stack_file(path)
    return load_spec(config, secret_keys, source=str(path), yaml_text=text)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML as ``safe_load`` reads it, but a key given twice in one mapping is an error (the
    engine would take one of the two values without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_stack_file(path: Path) -> tuple[dict[str, Any], set[str], str]:
    """Config and secret keys of ``Pulumi.<stack>.yaml``, with secure values replaced by
    placeholders (the offline plan has no key to decrypt them, and needs none)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(
            str(path), [Problem("(file)", "an unreadable file", f"a readable stack file ({exc.strerror})")]
        ) from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [Problem("(file)", "invalid YAML", f"valid YAML ({exc})")]) from None
    raw = doc.get("config", {}) if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        raise SpecError(str(path), [Problem("config", repr(raw), "a mapping of config keys")])
    # Imported ESC environments first, the stack's own values over them (as the engine merges).
    raw = {**_imported_config(path, doc.get("environment")), **raw}
    config: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for key, value in raw.items():
        plain, had_secret = _strip_secure(value, key)
        if had_secret:
            secret_keys.add(key)
        config[key] = plain
    return config, secret_keys, text


# Where the offline plan finds the ESC environments a stack imports: their definitions, kept
# beside the stacks (``esc env init <project>/<name> -f stacks/environments/<name>.yaml``).
ENVIRONMENTS_DIR = "environments"


def _imported_config(path: Path, imports: Any) -> dict[str, Any]:
    """The ``pulumiConfig`` of each Pulumi ESC environment the stack file imports."""
    if imports is None:
        return {}
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise SpecError(str(path), [Problem("environment", repr(imports), "a list of ESC environment names")])
    merged: dict[str, Any] = {}
    for name in imports:
        definition = path.parent / ENVIRONMENTS_DIR / f"{name.rsplit('/', 1)[-1]}.yaml"
        try:
            env = yaml.load(definition.read_text(), Loader=_UniqueKeyLoader) or {}  # a SafeLoader
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(
                str(path),
                [Problem("environment", repr(name), f"an ESC environment defined in {definition} ({exc})")],
            ) from None
        values = env.get("values", {}) if isinstance(env, dict) else None
        config = values.get("pulumiConfig", {}) if isinstance(values, dict) else None
        if not isinstance(config, dict):
            raise SpecError(
                str(definition), [Problem("values.pulumiConfig", repr(config), "a mapping of config keys")]
            )
        merged.update(config)
    return merged


def engine_strings(config: Mapping[str, Any]) -> dict[str, str]:
    """The string form the engine passes config in (objects as JSON, booleans lower-case)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            out[key] = str(value)
        else:
            out[key] = json.dumps(value)
    return out


# --- internals -----------------------------------------------------------------------------


def _strip_secure(value: Any, key: str) -> tuple[Any, bool]:
    if isinstance(value, dict):
        if set(value) in ({"secure"}, {"fn::secret"}):  # a stack's secret, or an ESC environment's
            return f"offline-plan-secret:{key}", True
        found = False
        out = {}
        for k, v in value.items():
            out[k], f = _strip_secure(v, f"{key}.{k}")
            found = found or f
        return out, found
    if isinstance(value, list):
        items = [_strip_secure(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], any(f for _, f in items)
    return value, False


def _from_validation(exc: ValidationError, data: dict[str, Any], lines: _LineIndex) -> list[Problem]:
    problems = []
    target = data.get("target")
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            given = "nothing" if err["type"] == "union_tag_not_found" else _given(target)
            expected = f"one of: {', '.join(t.value for t in Target)}"
            problems.append(Problem(f"{NAMESPACE}:target", given, expected, lines.find(_path("target"))))
            continue
        if loc and loc[0] == target:
            loc = loc[1:]  # the discriminator's tag: the target's model answered
        if not loc and err["type"] == "value_error":
            # a whole-spec check (prod rules): one problem per line, each starting with its key
            for part in str(err.get("ctx", {}).get("error", err["msg"])).splitlines():
                key = part.split(" ", 1)[0].rstrip(":")
                given = _given(_dig(data, key.split(".")), secret=key.split(".")[0] in SECRET_KEYS)
                problems.append(Problem(f"{NAMESPACE}:{key}", given, part, lines.find(_path(key))))
            continue
        key = f"{NAMESPACE}:{loc[0]}" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
        given = _given(err.get("input"), secret=loc[0] in SECRET_KEYS)
        if err["type"] == "extra_forbidden":
            problems.append(
                Problem(
                    key, "an unknown key", f"one of: {_known_keys(target, loc)}", lines.find(_yaml_loc(loc))
                )
            )
        elif err["type"] == "missing":
            what = _description(target, loc) or "a value"
            problems.append(
                Problem(
                    key, "nothing", f"{what} (required for target {target})", lines.find(_yaml_loc(loc[:-1]))
                )
            )
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(key, given, msg, lines.find(_yaml_loc(loc))))
    return problems


def _model_at(target: Any, loc: tuple[str, ...]) -> tuple[type[BaseModel] | None, Any]:
    """The model that holds the last key of ``loc``, and that key's field (or None)."""
    model: type[BaseModel] | None = MODELS.get(target) if isinstance(target, str) else None
    field = None
    for i, part in enumerate(loc):
        if model is None:
            return None, None
        field = next((f for n, f in model.model_fields.items() if (f.alias or to_camel(n)) == part), None)
        if i == len(loc) - 1:
            return model, field
        ann = getattr(field, "annotation", None) if field else None
        model = next(
            (a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
    return model, field


def _known_keys(target: Any, loc: tuple[str, ...]) -> str:
    """The keys valid where an unknown one was found."""
    model, _ = _model_at(target, loc)
    if model is None:
        return "(none)"
    return ", ".join(sorted(f.alias or to_camel(n) for n, f in model.model_fields.items()))


def _description(target: Any, loc: tuple[str, ...]) -> str | None:
    _, field = _model_at(target, loc)
    return getattr(field, "description", None)


def _dig(data: Any, path: list[str]) -> Any:
    for p in path:
        if isinstance(data, dict) and p in data:
            data = data[p]
        else:
            return None
    return data


def _given(value: Any, *, secret: bool = False) -> str:
    if secret:
        return "a value (not shown)"
    if value is None:
        return "nothing"
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _path(key: str) -> tuple[str, ...]:
    head, *rest = key.split(".")
    return (f"{NAMESPACE}:{head}", *rest)


def _yaml_loc(loc: tuple[str, ...]) -> tuple[str, ...]:
    return (f"{NAMESPACE}:{loc[0]}", *loc[1:]) if loc else ()


class _LineIndex:
    """Line numbers of keys in the stack file, for error messages."""

    def __init__(self, text: str | None) -> None:
        self._root = None
        if text:
            try:
                self._root = yaml.compose(text)
            except yaml.YAMLError:
                self._root = None

    def find(self, path: tuple[str, ...]) -> int | None:
        node = self._mapping_value(self._root, "config")
        line = None
        for part in path:
            if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
                node = node.value[int(part)]
                line = node.start_mark.line + 1
                continue
            if not isinstance(node, yaml.MappingNode):
                break
            hit = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if hit is None:
                break
            line = hit[0].start_mark.line + 1
            node = hit[1]
        return line

    @staticmethod
    def _mapping_value(node: Any, key: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == key:
                    return v
        return None
