"""docs/configuration.md's key reference, generated from the configuration schema.

Every property of workflow/schemas/config.schema.yaml carries a ``description`` (and
``units`` where the value has a physical unit). :func:`render` turns the schema and the
shipped config/scenarios.yaml into Markdown tables: every key under the top level,
``sweeps`` and the shared parameter block (``defaults``, ``presets``, ``scenarios``,
``source`` and ``baseline`` included), with its type, default, the presets that change it,
the allowed values, the unit and the description. :func:`update_document` writes them
between the two marker lines of the document and keeps the hand-written text around them.

Command: ``python -m ptychopipe config-doc --out docs/configuration.md`` (``--check``: exit 1
when the document is not what the schema gives, writing nothing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

START = "<!-- config-doc:start -->"
END = "<!-- config-doc:end -->"
#: Parameter blocks listed under their own heading, in this order (the rest go under "General").
SECTIONS = ("object", "probe", "scan", "split", "group", "model", "train", "infer", "stitch", "compare",
            "source", "baseline")


def _resolve(node: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` merged in (the node's own keys win)."""
    ref = node.get("$ref")
    if not ref:
        return dict(node)
    target: Any = schema
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def properties(schema: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, resolved node) of every property of the schema, depth first, in file order.

    Top-level keys are named as they are; the sweeps' per-sweep keys ``sweeps.<name>.KEY``;
    the shared parameter block (``$defs/params``) by its own paths (``N``, ``object.size``).
    """
    def walk(node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, sub in (node.get("properties") or {}).items():
            full = _resolve(sub, schema)
            path = f"{prefix}{key}"
            yield path, full
            if "properties" in full and not full.get("$ref") and key not in ("defaults",):
                yield from walk(full, path + ".")
            extra = full.get("additionalProperties")
            if isinstance(extra, Mapping) and "properties" in extra:
                yield from walk(extra, path + ".<name>.")

    yield from walk(schema, "")
    yield from walk(schema["$defs"]["params"], "")


def top_level_properties(schema: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The top level's keys and the sweeps' keys (not the parameter block)."""
    return [p for p in properties(schema) if p[0] in (schema.get("properties") or {}) or p[0].startswith("sweeps.")]


def parameter_properties(schema: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every key of the shared parameter block (``defaults``, each preset, each scenario)."""
    top = {p for p, _ in top_level_properties(schema)}
    return [p for p in properties(schema) if p[0] not in top]


def missing_descriptions(schema: Mapping[str, Any]) -> list[str]:
    """Dotted paths of the properties that have no non-empty ``description``."""
    return [path for path, node in properties(schema) if not str(node.get("description", "")).strip()]


def _type(node: Mapping[str, Any]) -> str:
    t = node.get("type", "")
    if t == "array" and isinstance(node.get("items"), Mapping) and node.get("minItems") and \
            node.get("minItems") == node.get("maxItems"):
        item = node["items"].get("type", "any")
        return f"[{', '.join([item] * int(node['minItems']))}]"
    if t == "array":
        item = node.get("items", {}).get("type") if isinstance(node.get("items"), Mapping) else None
        return f"list of {item}s" if item else "list"
    if isinstance(t, list):
        return " or ".join(t)
    return str(t) if t else "any"


def _value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float) and (abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3)):
        return f"{v:.1e}".replace("e+0", "e+").replace("e-0", "e-")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _allowed(node: Mapping[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append(" / ".join(f"`{_value(v)}`" for v in node["enum"]))
    for key, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{sym} {_value(node[key])}")
    if "minLength" in node:
        parts.append(f"length ≥ {node['minLength']}")
    if node.get("type") == "array" and node.get("minItems") and node.get("minItems") != node.get("maxItems"):
        parts.append(f"≥ {node['minItems']} item(s)")
    if "minProperties" in node:
        parts.append(f"≥ {node['minProperties']} entry")
    pattern = node.get("pattern") or (node.get("propertyNames") or {}).get("pattern")
    if not pattern and isinstance(node.get("items"), Mapping):
        pattern = node["items"].get("pattern")
    if pattern:
        parts.append(f"names `{pattern}`" if "propertyNames" in node or "items" in node else f"`{pattern}`")
    return ", ".join(parts)


def _lookup(tree: Any, path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if not isinstance(tree, Mapping) or key not in tree:
            return False, None
        tree = tree[key]
    return True, tree


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _param_rows(rows: list[tuple[str, dict[str, Any]]], config: Mapping[str, Any]) -> list[str]:
    lines = ["| key | type | default | presets | allowed | unit | description |", "|---|---|---|---|---|---|---|"]
    presets = config.get("presets") or {}
    for path, node in rows:
        group = "properties" in node
        found, default = _lookup(config.get("defaults") or {}, path)
        default_text = "" if group else (f"`{_value(default)}`" if found else "")
        changed = []
        for name, values in presets.items():
            hit, v = _lookup(values or {}, path)
            if hit and not group:
                changed.append(f"{name}: `{_value(v)}`")
        key = f"**`{path}`**" if group else f"`{path}`"
        lines.append("| " + " | ".join(_cell(c) for c in (
            key, "mapping" if group else _type(node), default_text, "; ".join(changed), "" if group else _allowed(node),
            node.get("units", ""), node.get("description", ""))) + " |")
    return lines


def render(schema: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The generated Markdown lines (without the markers)."""
    lines = ["<!-- Generated by `python -m ptychopipe config-doc --out docs/configuration.md` from",
             "workflow/schemas/config.schema.yaml and config/scenarios.yaml: edit those, not this block. -->",
             "", "## Top-level keys", "",
             "| key | type | shipped value | allowed | description |", "|---|---|---|---|---|"]
    for path, node in top_level_properties(schema):
        found, value = _lookup(config, path)
        shown = f"`{_value(value)}`" if found and path in ("preset", "run") else ""
        lines.append("| " + " | ".join(_cell(c) for c in (
            f"`{path}`", "mapping" if node.get("type") == "object" or "$ref" in node or "properties" in node
            else _type(node), shown, _allowed(node), node.get("description", ""))) + " |")
    params = parameter_properties(schema)
    lines += ["", "## Parameters", "",
              "The keys of `defaults`, of each preset and of each scenario (all optional in a preset or "
              "a scenario; after merging every one must be present). *default*: the value under "
              "`defaults` in config/scenarios.yaml (the `full` preset); *presets*: the shipped presets "
              "that change it. Scenarios may set any of them (the shipped ones set `gridsize`, `probe.*` "
              "and, for gs1_ideal, `stitch.*`)."]
    general = [(p, n) for p, n in params if p.split(".")[0] not in SECTIONS]
    lines += ["", "### General", "", *_param_rows(general, config)]
    for section in SECTIONS:
        rows = [(p, n) for p, n in params if p == section or p.startswith(section + ".")]
        if rows:
            lines += ["", f"### `{section}`", "", *_param_rows(rows, config)]
    return lines


def update_document(text: str, block: list[str], source: str, marker: str = "config-doc") -> str:
    """``text`` with the lines between the ``<!-- {marker}:start -->`` and ``<!-- {marker}:end -->``
    lines replaced by ``block``. Exactly one start and one end marker line, start first; else
    ValueError naming ``source``."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.strip() == start]
    ends = [i for i, ln in enumerate(lines) if ln.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0]:
        raise ValueError(f"{source}: expected one line {start} followed by one line {end}; found "
                         f"{len(starts)} start and {len(ends)} end marker line(s)")
    return "\n".join(lines[:starts[0] + 1] + block + lines[ends[0]:]) + "\n"


def generate(out: str | Path, schema_path: str | Path | None = None,
             configfile: str | Path = "config/scenarios.yaml") -> str:
    """The text ``out`` should hold: its hand-written parts with the generated block between
    the markers. Raises ValueError when a schema property has no description."""
    from .config import SCHEMA_PATH, load_schema, load_yaml

    schema = load_schema(Path(schema_path) if schema_path else SCHEMA_PATH)
    missing = missing_descriptions(schema)
    if missing:
        raise ValueError(f"{schema_path or SCHEMA_PATH}: properties without a description: {', '.join(missing)}")
    config = load_yaml(configfile)
    return update_document(Path(out).read_text(), render(schema, config), str(out))


def generate_stages(out: str | Path) -> str:
    """The text ``out`` (docs/artifacts.md) should hold: its hand-written parts with the stage
    table of :data:`ptychopipe.stages.STAGES` between the ``stages`` markers."""
    from .stages import markdown_table

    block = ["<!-- Generated by `python -m ptychopipe config-doc --stages docs/artifacts.md` from the "
             "stage registry (src/ptychopipe/stages/__init__.py); edit that, not this table. -->", "",
             *markdown_table().splitlines()]
    return update_document(Path(out).read_text(), block, str(out), marker="stages")
