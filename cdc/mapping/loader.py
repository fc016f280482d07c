"""Loading the mapping files: every problem names the file, the entity and the field."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from cdc.domain.errors import ConfigError
from cdc.mapping.model import EntityMapping

SALT_ENV = "CDC_MAPPINGS__PII_SALT"


def load_mappings(directory: str | Path, pii_salt: str | None = None) -> list[EntityMapping]:
    """Every ``*.yaml``/``*.yml`` mapping in ``directory``; ``pii_salt`` (default: $CDC_MAPPINGS__PII_SALT)
    keys the hashes of ``pii: hash`` fields."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"mappings directory {directory} does not exist (setting mappings.dir)")
    salt = pii_salt if pii_salt is not None else os.environ.get(SALT_ENV)
    mappings: list[EntityMapping] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.y*ml")):
        mapping = load_mapping_file(path)
        if mapping.entity in seen:
            raise ConfigError(f"mapping {path}: entity {mapping.entity!r} is already defined in {seen[mapping.entity]}")
        seen[mapping.entity] = path
        hashed = mapping.uses_hash()
        if hashed and not salt:
            raise ConfigError(f"mapping {path} (entity {mapping.entity}): fields {hashed} are 'pii: hash' but no salt is "
                              f"set: set mappings.pii_salt ({SALT_ENV}) to a secret of your own")
        mapping._pii_salt = salt.encode("utf-8") if salt else None  # noqa: SLF001
        mappings.append(mapping)
    if not mappings:
        raise ConfigError(f"mappings directory {directory} holds no *.yaml mapping")
    return mappings


def load_mapping_file(path: Path) -> EntityMapping:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"mapping {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"mapping {path}: expected a mapping with entity, source, key and fields at the top level")
    try:
        return EntityMapping.model_validate(raw)
    except ValidationError as exc:
        entity = raw.get("entity", "?")
        problems = "; ".join(f"{_loc(e['loc'])}: {_msg(e)}" for e in exc.errors())
        raise ConfigError(f"mapping {path} (entity {entity}): {problems}") from None


def _loc(loc: tuple) -> str:
    # pydantic reports a union's branch name (e.g. 'Condition'); it means nothing to the author of the file.
    parts = [str(p) for p in loc if not (isinstance(p, str) and p[:1].isupper())]
    return ".".join(parts).replace("in_", "in") or "(top)"


def _msg(err: dict) -> str:
    msg = err["msg"]
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
