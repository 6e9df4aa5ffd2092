"""Schemas no finite JSON value can match, found at validation (a 400 naming the place) instead of at decoding.

The grammar engine compiles such schemas without complaint and then fails or loops while generating: a required
property whose schema refers back to itself ({"properties": {"n": {"$ref": "#"}}, "required": ["n"]}) asks for
{"n": {"n": ...}} without end; {"not": {}}, {"type": []}, {"enum": []} and `false` allow no value at all.
Recursion is fine wherever it can stop: an optional property, an array that may be empty, a nullable branch.

Objects are read the way the grammar builder (app/engine/constraints.py) builds them: a schema that lists
`properties` or `required` without a `type` is an object.

A least fixpoint over the schema's local `$ref` targets: a target is finite once its schema can be satisfied using
only targets already known to be finite; whatever is left after no more are added can never terminate. Pure and
iterative over refs (recursion only follows nesting, which the body parser bounds).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

_SCALARS = {"string", "number", "integer", "boolean", "null"}


def unsatisfiable(schema: Any) -> str | None:
    """None when some finite JSON value can match `schema`; otherwise why not, naming the place as a JSON pointer
    ("#/properties/n: ...")."""
    checker = _Checker(schema)
    return checker.explain()


class _Checker:
    def __init__(self, root: Any):
        self.root = root
        self.finite: set[str] = set()  # local $ref targets known to have a finite value
        self.assume_refs_finite = False  # while asking whether a target fails for a reason of its own

    def explain(self) -> str | None:
        targets = {ref: _resolve(self.root, ref) for ref in _local_refs(self.root)}
        dependents: dict[str, set[str]] = {}
        for ref, target in targets.items():
            for needed in _local_refs(target):
                dependents.setdefault(needed, set()).add(ref)
        pending = list(targets)
        while pending:  # a worklist: a ref is looked at again only when one it uses became finite
            ref = pending.pop()
            if ref in self.finite:
                continue
            target = targets[ref]
            if target is _MISSING or self.why(target, ref) is None:
                self.finite.add(ref)  # (a ref to nothing is the grammar compiler's error to name)
                pending.extend(d for d in dependents.get(ref, ()) if d not in self.finite)
        return self.why(self.root, "#")

    def why(self, schema: Any, at: str) -> str | None:
        if schema is True:
            return None
        if schema is False:
            return f"{at}: the schema `false` matches no value"
        if not isinstance(schema, dict):
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#") and ref not in self.finite and not self.assume_refs_finite:
            return self._own_reason(ref) or (
                f"{at}: $ref {ref!r} closes a cycle of required values: every value would have to contain another "
                "one without end (make the recursion optional, nullable, or an array that may be empty)"
            )
        negated = schema.get("not")
        if negated is True or negated == {}:
            return f'{at}: "not": {_json(negated)} excludes every value'
        if schema.get("enum") == []:
            return f'{at}: "enum": [] allows no value'
        for keyword in ("anyOf", "oneOf"):
            options = schema.get(keyword)
            if isinstance(options, list):
                reason = self._any(options, f"{at}/{keyword}")
                if reason:
                    return reason
        parts = schema.get("allOf")
        for i, part in enumerate(parts if isinstance(parts, list) else []):
            reason = self.why(part, f"{at}/allOf/{i}")
            if reason:
                return reason
        if "enum" in schema or "const" in schema:
            return None  # the value is one of the listed ones: finite
        return self._by_type(schema, at)

    def _own_reason(self, ref: str) -> str | None:
        """Why the target of `ref` fails even if every ref in it were fine (None: it fails only by recursing)."""
        self.assume_refs_finite = True
        try:
            return self.why(_resolve(self.root, ref), ref)
        finally:
            self.assume_refs_finite = False

    def _any(self, options: list[Any], at: str) -> str | None:
        if not options:
            return f"{at}: an empty list allows no value"
        first = None
        for i, option in enumerate(options):
            reason = self.why(option, f"{at}/{i}")
            if reason is None:
                return None
            first = first or reason
        return first

    def _by_type(self, schema: dict[str, Any], at: str) -> str | None:
        types = schema.get("type")
        if types is None:
            shaped = any(k in schema for k in ("properties", "required"))
            types = ["object"] if shaped else sorted(_SCALARS)
        elif isinstance(types, str):
            types = [types]
        if not isinstance(types, list):
            return None  # malformed: the grammar compiler names it
        if not types:
            return f'{at}: "type": [] allows no type'
        if any(t in _SCALARS for t in types):
            return None
        reasons = []
        if "object" in types:
            reasons.append(self._object(schema, at))
        if "array" in types:
            reasons.append(self._array(schema, at))
        return None if not reasons or not all(reasons) else reasons[0]

    def _object(self, schema: dict[str, Any], at: str) -> str | None:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        for name in required if isinstance(required, list) else []:
            if not isinstance(name, str):
                continue
            where = f"{at}/properties/{_escape(name)}"
            if name in properties:
                reason = self.why(properties[name], where)
            elif schema.get("patternProperties"):
                reason = None  # may match a pattern: not worth deciding here
            else:
                extra = schema.get("additionalProperties", True)
                reason = (
                    f"{at}: property {name!r} is required but additionalProperties is false and it is not listed"
                    if extra is False
                    else self.why(extra, f"{at}/additionalProperties")
                )
            if reason:
                return reason
        return None

    def _array(self, schema: dict[str, Any], at: str) -> str | None:
        need = schema.get("minItems", 0)
        need = need if isinstance(need, int) else 0
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        for i, item in enumerate(prefix[:need]):
            reason = self.why(item, f"{at}/prefixItems/{i}")
            if reason:
                return reason
        if need > len(prefix) and "items" in schema:
            reason = self.why(schema["items"], f"{at}/items")
            if reason:
                return reason
        if "contains" in schema:
            return self.why(schema["contains"], f"{at}/contains")
        return None


_MISSING = object()


def _local_refs(schema: Any) -> set[str]:
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                found.add(ref)
            stack.extend(v for k, v in node.items() if k not in ("enum", "const", "default", "examples"))
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _resolve(root: Any, ref: str) -> Any:
    node = root
    pointer = unquote(ref[1:])
    for token in pointer.split("/")[1:] if pointer else []:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return _MISSING
    return node


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _json(value: Any) -> str:
    return "true" if value is True else "{}"
