"""JSON schema to grammar: llama.cpp's meaning, llguidance's compiler, and no silent gaps.

llguidance compiles the schema (it enforces ``pattern``, ``format``, bounds and ``$ref``
exactly, with lexemes it knows to be safe). Before that, the schema is rewritten where llama.cpp's
``json-schema-to-grammar`` means something other than plain JSON Schema, so a schema behaves as
llama.cpp users expect:

- with no ``type``, the keywords decide as in llama.cpp: ``properties`` (or a non-true
  ``additionalProperties``) make an object, ``items``/``prefixItems`` an array, ``pattern``,
  ``minLength``, ``maxLength`` or ``format`` a string;
- an object's extra properties are refused unless ``additionalProperties`` allows them;
- required properties come first, then the optional ones, each group in the schema's order;
- ``prefixItems`` (or a draft-4 ``items`` list) is a tuple of exactly those items;
- integers have at most 16 digits unless ``minimum``/``maximum`` say otherwise;
- whitespace is llama.cpp's: nothing, one space, or one or two newlines and up to 20 spaces or tabs.

Every keyword is checked against what can be enforced; anything else (``uniqueItems``,
``not``, ``if``, remote ``$ref`` ...) raises :class:`UnsupportedSchemaError` naming it and where it
is, where llama.cpp would drop it and generate JSON the schema does not allow.
"""

from __future__ import annotations

import json

from .errors import GrammarError, UnsupportedSchemaError

# llama.cpp's ``space`` rule: | " " | "\n"{1,2} [ \t]{0,20}
WHITESPACE = r"(?: |\n{1,2}[ \t]{0,20})?"
MAX_DEPTH = 64
INTEGER_LIMIT = 10 ** 16 - 1  # llama.cpp's integers: [1-9] [0-9]{0,15}

_ANNOTATIONS = {"$schema", "$id", "$comment", "$anchor", "title", "description", "default", "examples",
                "deprecated", "readOnly", "writeOnly", "contentEncoding", "contentMediaType"}
_ENFORCED = {
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions",
    "properties", "additionalProperties", "required", "patternProperties", "minProperties", "maxProperties",
    "items", "prefixItems", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
}
FORMATS = {"date", "time", "date-time", "duration", "uuid", "email", "hostname", "ipv4", "ipv6", "uri"}
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties")


def _pointer(path: str, key: str | int) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _resolve(root: dict, ref, path: str) -> None:
    """Check that a ``$ref`` points inside this document."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise UnsupportedSchemaError("$ref", path, f"only references inside the schema (#/...) can be "
                                                   f"followed, not {ref!r}")
    if _lookup(root, ref) is None:
        raise GrammarError(f"JSON schema $ref {ref!r} at {path or '#'} points to nothing")


class _Rewriter:
    """Rewrites one schema document (see the module docstring); ``open`` holds the JSON pointers
    of subschemas that are parts of an ``allOf`` (directly, or through ``anyOf``/``oneOf`` and
    ``$ref``): their objects keep JSON Schema's open default, since llama.cpp merges the parts'
    properties into one object, which closing each part would make impossible to satisfy."""

    def __init__(self, root):
        self.root = root if isinstance(root, dict) else {}
        self.open = _all_of_parts(self.root)

    def rewrite(self, schema, path: str = "", depth: int = 0):
        if isinstance(schema, bool):
            return schema
        if not isinstance(schema, dict):
            raise GrammarError(f"JSON schema at {path or '#'} must be an object or a boolean, "
                               f"not {type(schema).__name__}")
        if depth > MAX_DEPTH:
            raise GrammarError(f"JSON schema is nested more than {MAX_DEPTH} levels deep at {path or '#'}")
        for key in schema:
            if key not in _ENFORCED and key not in _ANNOTATIONS:
                raise UnsupportedSchemaError(key, path)
        out = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
        if "$ref" in out:
            _resolve(self.root, out["$ref"], path)
        if "format" in out and out["format"] not in FORMATS:
            raise UnsupportedSchemaError("format", path, f"format {out['format']!r} is not one of "
                                                         f"{', '.join(sorted(FORMATS))}")
        if "pattern" in out:
            _check_pattern(out["pattern"], path)
        if isinstance(out.get("items"), list):  # draft-4 tuples: exactly these items, as llama.cpp reads them
            out["prefixItems"] = out.pop("items")
        if isinstance(out.get("prefixItems"), dict):  # llama.cpp: a schema there is the item schema
            items = out.pop("prefixItems")
            out.setdefault("items", items)
        if "prefixItems" in out and "items" not in out:
            out["items"] = False
        for key in _SUBSCHEMA_MAPS:
            if key in out:
                if not isinstance(out[key], dict):
                    raise GrammarError(f"JSON schema {key} at {path or '#'} must be an object")
                out[key] = {name: self.rewrite(sub, _pointer(_pointer(path, key), name), depth + 1)
                            for name, sub in out[key].items()}
        for key in _SUBSCHEMA_LISTS:
            if key in out:
                if not isinstance(out[key], list) or not out[key]:
                    raise GrammarError(f"JSON schema {key} at {path or '#'} must be a non-empty array")
                out[key] = [self.rewrite(sub, _pointer(_pointer(path, key), i), depth + 1)
                            for i, sub in enumerate(out[key])]
        for key in _SUBSCHEMAS:
            if key in out:
                out[key] = self.rewrite(out[key], _pointer(path, key), depth + 1)
        _infer_type(out)
        types = out.get("type")
        types = set(types) if isinstance(types, list) else {types}
        if "object" in types:
            _llamacpp_object(out, closed="#" + path not in self.open)
        if "integer" in types and "number" not in types:
            if "minimum" not in out and "exclusiveMinimum" not in out:
                out["minimum"] = -INTEGER_LIMIT
            if "maximum" not in out and "exclusiveMaximum" not in out:
                out["maximum"] = INTEGER_LIMIT
        return out


def _all_of_parts(root: dict) -> set[str]:
    """Pointers (``#/...``) of every ``allOf`` part, following ``anyOf``/``oneOf`` and ``$ref``."""
    parts: set[str] = set()
    todo: list[tuple[object, str, bool]] = [(root, "", False)]
    seen: set[tuple[str, bool]] = set()
    while todo:
        node, path, inside = todo.pop()
        if (path, inside) in seen or not isinstance(node, dict) or path.count("/") > 2 * MAX_DEPTH + 2:
            continue  # too deep: the rewrite refuses it
        seen.add((path, inside))
        if inside:
            parts.add("#" + path)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                target = _lookup(root, ref)
                if target is not None:
                    todo.append((target, ref[1:], True))
        for key, value in node.items():
            if isinstance(value, list):
                child_inside = key == "allOf" or (inside and key in ("anyOf", "oneOf"))
                todo += [(v, _pointer(_pointer(path, key), i), child_inside) for i, v in enumerate(value)]
            elif isinstance(value, dict):
                if key in _SUBSCHEMA_MAPS:
                    todo += [(v, _pointer(_pointer(path, key), k), False) for k, v in value.items()]
                elif key in _SUBSCHEMAS:
                    todo.append((value, _pointer(path, key), False))
    return parts


def _lookup(root: dict, ref: str):
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _check_pattern(pattern, path: str) -> None:
    """A ``pattern`` the matcher cannot run (look-arounds, back-references, bad syntax) is refused."""
    import llguidance

    if not isinstance(pattern, str):
        raise GrammarError(f"JSON schema pattern at {path or '#'} must be a string")
    compiled = llguidance.LLMatcher.grammar_from_json_schema({"type": "string", "pattern": pattern})
    error = llguidance.LLMatcher.validate_grammar(compiled)
    if error:
        reason = next((line.strip() for line in error.splitlines() if line.strip().startswith("error:")),
                      error.splitlines()[0] if error else "")
        if "not supported" in reason:
            raise UnsupportedSchemaError("pattern", path, f"{pattern!r}: {reason}")
        raise GrammarError(f"JSON schema pattern {pattern!r} at {path or '#'} is not a valid regular expression: "
                           f"{reason}")


def _infer_type(schema: dict) -> None:
    """llama.cpp's reading of a schema without ``type``."""
    if "type" in schema or any(k in schema for k in ("$ref", "anyOf", "oneOf", "const", "enum")):
        return
    if "properties" in schema or ("additionalProperties" in schema and schema["additionalProperties"] is not True):
        schema["type"] = "object"
    elif "allOf" in schema:
        return
    elif "items" in schema or "prefixItems" in schema:
        schema["type"] = "array"
    elif any(k in schema for k in ("pattern", "minLength", "maxLength", "format")):
        schema["type"] = "string"


def _llamacpp_object(schema: dict, closed: bool) -> None:
    properties = schema.get("properties")
    if closed and properties is not None and "additionalProperties" not in schema \
            and "patternProperties" not in schema:
        schema["additionalProperties"] = False
    if properties:
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise GrammarError("JSON schema 'required' must be an array of property names")
        first = {k: v for k, v in properties.items() if k in required}
        schema["properties"] = {**first, **{k: v for k, v in properties.items() if k not in required}}


def llamacpp_meaning(schema):
    """The schema rewritten so that plain JSON Schema means what llama.cpp's converter means."""
    return _Rewriter(schema).rewrite(schema)


def compile_json_schema(schema) -> str:
    """A JSON schema (a dict, or its JSON text) as a compiled llguidance grammar."""
    import llguidance

    from . import validate_compiled

    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except (ValueError, RecursionError) as e:
            raise GrammarError(f"the JSON schema is not valid JSON: {e}") from None
    if not isinstance(schema, (dict, bool)):
        raise GrammarError(f"a JSON schema must be an object, not {type(schema).__name__}")
    rewritten = llamacpp_meaning(schema)
    options = {"whitespace_pattern": WHITESPACE, "item_separator": ",", "key_separator": ":", "lenient": False,
               "json_allow_general_unicode_escapes": True}
    try:
        compiled = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(rewritten), overrides=options)
    except ValueError as e:
        raise GrammarError(f"the JSON schema could not be compiled: {e}") from None
    return validate_compiled(compiled)
