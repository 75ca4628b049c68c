"""Typed job configs: one YAML file read into dataclasses, with ``--set key=value`` overrides.

Every config class is declared with ``@config_dataclass``: a standard dataclass that pydantic
validates, rejecting unknown keys and ill-typed values. ``load_config`` turns any validation
failure into one ``ConfigError`` line that names the offending key, e.g.
``shards.target_mb: Input should be a valid number``.

String values may name environment variables, ``${NAME}`` or ``${NAME:-default}``, so that one
config runs on a laptop and on a cluster: ``output: ${WEBLLM_STORAGE:-data}/runs`` is ``data/runs``
locally and ``s3://bucket/webllm/runs`` where the cluster sets ``WEBLLM_STORAGE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml
from pydantic.dataclasses import dataclass as _pydantic_dataclass

T = TypeVar("T")

config_dataclass = _pydantic_dataclass(config=pydantic.ConfigDict(extra="forbid"))


class ConfigError(ValueError):
    """A bad config: the message is one line and names the key."""


def config_parser(description: str, config_help: str, config_required: bool = True) -> argparse.ArgumentParser:
    """The command line every job starts from: ``--config FILE`` and repeatable ``--set KEY=VALUE``
    overrides, for ``load_config(cls, args.config, args.set)``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=config_required, help=config_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: {error}".replace("\n", " ")) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        data = loaded or {}
    for override in overrides or []:
        apply_override(data, override)
    return validate(cls, expand_variables(data))


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_variables(node: Any, key: str = "") -> Any:
    """``node`` with ``${NAME}`` / ``${NAME:-default}`` in its strings replaced from the environment;
    a variable that is unset and has no default is an error naming the key."""
    if isinstance(node, dict):
        return {name: expand_variables(value, f"{key}.{name}" if key else str(name)) for name, value in node.items()}
    if isinstance(node, list):
        return [expand_variables(value, f"{key}.{index}") for index, value in enumerate(node)]
    if not isinstance(node, str):
        return node

    def value(match: re.Match) -> str:
        name, default = match.groups()
        if os.environ.get(name):
            return os.environ[name]
        if default is None:
            raise ConfigError(f"{key}: the environment variable {name} is not set (write ${{{name}:-default}} "
                              "for a value without it)")
        return default

    return _VARIABLE.sub(value, node)


def validate(cls: type[T], data: Any, prefix: str = "") -> T:
    try:
        return pydantic.TypeAdapter(cls).validate_python(data)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        key = f"{prefix}.{key}" if prefix and key else (prefix or key)
        message = "unknown key" if first["type"] == "unexpected_keyword_argument" else first["msg"]
        message = message.removeprefix("Value error, ")  # a check of our own: its text says it all
        if not key and ": " in message:  # a check across sections names its own key
            raise ConfigError(message) from None
        raise ConfigError(f"{key or '<config>'}: {message}") from None


def apply_override(data: dict[str, Any], override: str) -> None:
    """``a.b.c=value``: the value is parsed as YAML, so numbers, booleans and lists keep their types."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected key=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part} is not a mapping")
        node = child
    node[leaf] = yaml.safe_load(raw)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> ``{"a.b.0.c": value}``, the shape MLflow params want."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
