"""A small JSON Schema validator: the subset the recipe schema uses, with a message per problem.

``jsonschema`` is not a dependency of the project; this covers ``type``, ``required``,
``properties``, ``additionalProperties: false``, ``items``, ``minItems``, ``minLength``,
``maxLength``, ``pattern`` and ``enum``. A keyword outside that subset is refused when the schema is
loaded, so the schema cannot silently ask for more than is checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SUPPORTED = frozenset({
    "$schema", "$id", "title", "description", "type", "required", "properties", "additionalProperties",
    "items", "minItems", "minLength", "maxLength", "pattern", "enum",
})
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),),
}


def load_schema(path: Path) -> dict[str, Any]:
    """A schema file shipped with the package, refused when it uses a keyword this validator lacks."""
    schema = json.loads(path.read_text())
    check_schema_keywords(schema)
    return schema


def check_schema_keywords(schema: dict[str, Any], at: str = "#") -> None:
    unknown = sorted(set(schema) - SUPPORTED)
    if unknown:
        raise ValueError(f"schema {at}: keyword(s) {', '.join(unknown)} not supported by codex_core.schema")
    for name, sub in schema.get("properties", {}).items():
        check_schema_keywords(sub, f"{at}/properties/{name}")
    if isinstance(schema.get("items"), dict):
        check_schema_keywords(schema["items"], f"{at}/items")


def _type_name(value: Any) -> str:
    for name, kinds in _TYPES.items():
        if isinstance(value, kinds) and not (isinstance(value, bool) and name in ("integer", "number")):
            return name
    return type(value).__name__


def validate(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every problem of ``instance``, each as ``<path>: <what is wrong>`` (empty list: valid)."""
    where = path or "(top level)"
    expected = schema.get("type")
    if expected is not None and _type_name(instance) != expected and not (
            expected == "number" and _type_name(instance) == "integer"):
        return [f"{where}: expected {expected}, got {_type_name(instance)} {instance!r}"[:300]]
    errors: list[str] = []
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{where}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{where}: must not be empty" if schema["minLength"] == 1
                          else f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{where}: {instance!r} does not match the pattern {schema['pattern']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{where}: needs at least {schema['minItems']} item(s), got {len(instance)}")
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(instance):
                errors.extend(validate(item, schema["items"], f"{path}[{index}]"))
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in instance:
                errors.append(f"{where}: missing required key {key!r}")
        if schema.get("additionalProperties") is False:
            for key in instance:
                if key not in properties:
                    errors.append(f"{where}: unknown key {key!r}; allowed keys: {', '.join(sorted(properties))}")
        for key, sub in properties.items():
            if key in instance:
                errors.extend(validate(instance[key], sub, f"{path}.{key}" if path else str(key)))
    return errors
