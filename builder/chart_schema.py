"""values.schema.json's launcher-option nodes: each option's type and the launcher's own range.

The range comes from the option's parser (IntRange, IntListRange, OpenInterval, Choice in
kthybrid_serve.parsers); any other parser gives its type only, from the field's annotation.
"""

from __future__ import annotations

import json
from typing import Any

from builder.chart import (
    CHART_NARROWS,
    FRACTION_PATTERN,
    GENERATED_BY,
    SCHEMA_COMMENT,
    ChartOption,
    base_type,
    chart_default,
)
from builder.errors import RenderDriftError

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", tuple: "array"}


def schema_node(option: ChartOption) -> dict[str, Any]:
    """The values.schema.json node of one option: the launcher's type and range."""
    from kthybrid_serve.parsers import (
        MAX_TEXT,
        Choice,
        IntListRange,
        IntRange,
        OpenInterval,
        path,
        text,
    )

    parse = option.parse
    node: dict[str, Any] = {"$comment": SCHEMA_COMMENT.format(by=GENERATED_BY, env=option.env)}
    kinds: list[str]
    if isinstance(parse, Choice):
        node["description"] = option.help
        node["enum"] = [*parse.choices, *([] if option.owned else [None])]
        return node
    if isinstance(parse, IntRange):
        kinds = ["integer"]
        node |= {"minimum": parse.low, "maximum": parse.high}
    elif isinstance(parse, IntListRange):
        kinds = ["array"]
        items = {"type": "integer", "minimum": parse.low, "maximum": parse.high}
        node |= {"items": items, "minItems": 1} | ({"uniqueItems": True} if parse.unique else {})
    elif isinstance(parse, OpenInterval):
        kinds = ["number"]
        node |= {"exclusiveMinimum": parse.low, "exclusiveMaximum": parse.high}
        if (parse.low, parse.high) == (0.0, 1.0):
            kinds.append("string")
            node["pattern"] = FRACTION_PATTERN
    else:
        base, element = base_type(option.annotation)
        kinds = [JSON_TYPES[base]]
        if base is tuple:
            node["items"] = {"type": JSON_TYPES[element or str]}
        if option.parse in (path, text):
            node["maxLength"] = MAX_TEXT
        node |= CHART_NARROWS.get(option.path, {})
    if not option.owned:
        kinds.append("null")
    node = {"type": kinds[0] if len(kinds) == 1 else kinds, "description": option.help} | node
    return node


def _integers(node: dict[str, Any]) -> dict[str, Any]:
    """Whole-number floats (0.0, 1.0) as JSON integers, as the schema wrote them by hand."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in node.items()}


def render_schema(text: str, options: list[ChartOption]) -> str:
    """values.schema.json with every launcher option's node rendered; stale nodes removed."""
    schema = json.loads(text)
    marker = GENERATED_BY
    wanted = {o.path: o for o in options}
    for option in options:
        parent = schema
        for part in option.parent.split("."):
            parent = parent.get("properties", {}).get(part)
            if not isinstance(parent, dict) or "properties" not in parent:
                raise RenderDriftError(
                    f"values.schema.json has no object `{option.parent}` for {option.path} "
                    f"({option.env}): add it with a `properties` map"
                )
        parent["properties"][option.key] = _integers(schema_node(option))
        required = set(parent.get("required", []))
        if chart_default(option) is not None:
            required.add(option.key)
        else:
            required.discard(option.key)
        parent["required"] = sorted(required)
    _drop_stale(schema, "", wanted, marker)
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _drop_stale(node: dict[str, Any], prefix: str, wanted: dict[str, Any], marker: str) -> None:
    for key, child in list(node.get("properties", {}).items()):
        path = f"{prefix}{key}"
        if not isinstance(child, dict):
            continue
        if marker in str(child.get("$comment", "")) and path not in wanted:
            del node["properties"][key]
            node["required"] = [r for r in node.get("required", []) if r != key]
        else:
            _drop_stale(child, path + ".", wanted, marker)
