"""Turn pydantic validation errors into located diagnostics with fix hints.

Shared by the rule loader and the case loader. Pydantic's error locations include union tags and member
names that are not in the document; they are skipped by walking the document alongside the location.
Unknown keys get a did-you-mean computed from the fields the model at that place actually has.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ..core.errors import Diagnostic, choices_hint, did_you_mean
from .source import Document, PathKey, format_path

_TYPE_WORDS = {
    "float_type": "a number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "text",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "nothing",
}


def _tag_of(tp: Any) -> str | None:
    if get_origin(tp) is Annotated:
        for meta in get_args(tp)[1:]:
            tag = getattr(meta, "tag", None)
            if isinstance(tag, str):
                return tag
    return None


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _name_of(tp: Any) -> str:
    tp = _strip(tp)
    return getattr(tp, "__name__", str(tp))


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _field_type(model: type[BaseModel], key: object) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _step(tp: Any, elem: object) -> tuple[Any, bool] | None:
    """Follow one location element; returns (next type, whether the element is a document key)."""
    tp = _strip(tp)
    if _is_union(tp):
        members = get_args(tp)
        for m in members:
            if _tag_of(m) == elem or _name_of(m) == elem:
                return _strip(m), False
        for m in members:
            if m is type(None):
                continue
            found = _step(m, elem)
            if found is not None:
                return found
        return None
    if get_origin(tp) is list and isinstance(elem, int):
        return get_args(tp)[0], True
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        ftype = _field_type(tp, elem)
        if ftype is not None:
            return ftype, True
    return None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    tp: Any = root
    for elem in loc:
        stepped = _step(tp, elem)
        if stepped is None:
            continue  # a union member label (e.g. 'union[float,int]') that is not a type step
        tp = stepped[0]
    tp = _strip(tp)
    if _is_union(tp):
        models = [m for m in get_args(tp) if isinstance(_strip(m), type) and issubclass(_strip(m), BaseModel)]
        tp = _strip(models[0]) if len(models) == 1 else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def allowed_keys(model: type[BaseModel]) -> list[str]:
    return sorted(info.alias or name for name, info in model.model_fields.items())


def data_path(data: Any, loc: tuple[Any, ...]) -> tuple[PathKey, bool]:
    """The document path a pydantic location points at, and whether the last element exists."""
    path: list[str | int] = []
    node = data
    exists = True
    for i, elem in enumerate(loc):
        in_mapping = isinstance(node, dict) and isinstance(elem, str) and elem in node
        in_list = isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node)
        if in_mapping or in_list:
            path.append(elem)
            node = node[elem]
        elif i == len(loc) - 1 and isinstance(node, dict) and isinstance(elem, str):
            exists = False  # a missing key: point at its parent mapping
        # anything else is a union tag or member name pydantic adds, not a place in the document
    return tuple(path), exists


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"text '{value}'"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "nothing"
    return repr(value)


def _value_at(data: Any, path: PathKey) -> Any:
    node = data
    for elem in path:
        node = node[elem]
    return node


def diagnostics_from(exc: ValidationError, doc: Document, root: type[BaseModel],
                     condition_keys: tuple[str, ...] = ()) -> list[Diagnostic]:
    """Located diagnostics for every error in ``exc``; several errors at one place become one."""
    grouped: dict[PathKey, list[dict[str, Any]]] = {}
    order: list[PathKey] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path, exists = data_path(doc.data, loc)
        key = (*path, "?" + str(loc[-1])) if not exists and loc else path
        if key not in grouped:
            grouped[key] = []
            order.append(key)
        grouped[key].append({**err, "_path": path, "_exists": exists})
    # A misspelt key ('tme') also makes the key it was meant to be ('time') missing: report the misspelling only.
    unknown_at: dict[PathKey, list[str]] = {}
    for key in order:
        for e in grouped[key]:
            if e["type"] == "extra_forbidden":
                unknown_at.setdefault(e["_path"][:-1], []).append(str(e["loc"][-1]))
    out: list[Diagnostic] = []
    for key in order:
        errs = grouped[key]
        if all(e["type"] == "missing" for e in errs):
            missing = str(errs[0]["loc"][-1])
            if any(did_you_mean(u, [missing]) for u in unknown_at.get(errs[0]["_path"], [])):
                continue
        out.append(_one(errs, doc, root, condition_keys))
    return out


def _one(errs: list[dict[str, Any]], doc: Document, root: type[BaseModel],
         condition_keys: tuple[str, ...]) -> Diagnostic:
    file = doc.positions.file
    custom = [e for e in errs if re.fullmatch(r"E\d{3}", e["type"])]
    err = custom[0] if custom else errs[0]
    path: PathKey = err["_path"]
    loc = tuple(err["loc"])
    etype: str = err["type"]
    where = format_path(path)
    hint = ""
    if custom:
        code = etype
        message = err["msg"]
        hint = str((err.get("ctx") or {}).get("hint", ""))
        if code == "E112":
            value = _value_at(doc.data, path)
            message, hint = _condition_kind_problem(value, condition_keys)
        at = (err.get("ctx") or {}).get("at")
        if at is not None and isinstance(_value_at(doc.data, path), dict) and at in _value_at(doc.data, path):
            path = (*path, str(at))
            where = format_path(path)
        line, col = doc.positions.of_value(path)
        return Diagnostic(file, line, col, code, message, hint, where)
    if etype == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(root, loc[:-1])
        allowed = allowed_keys(model) if model else []
        hint = did_you_mean(key, allowed) or (f"allowed here: {', '.join(allowed)}" if allowed else
                                              "remove the key, or check its spelling and indentation")
        line, col = doc.positions.of_key(path)
        return Diagnostic(file, line, col, "E100", f"unknown key '{key}'", hint, where)
    if etype == "missing":
        key = str(loc[-1])
        line, col = doc.positions.of_value(path)
        return Diagnostic(file, line, col, "E101", f"required key '{key}' is missing",
                          f"add '{key}:'", format_path((*path, key)))
    line, col = doc.positions.of_value(path)
    value = _value_at(doc.data, path) if err["_exists"] else None
    types_wanted = [_TYPE_WORDS[e["type"]] for e in errs if e["type"] in _TYPE_WORDS]
    if types_wanted:
        wanted = " or ".join(dict.fromkeys(types_wanted))
        if "a mapping" in wanted and "a number" in wanted:
            wanted = "a number or {ref: alias}"
        hint = ""
        if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
            hint = "remove the quotes so it is read as a number"
        elif isinstance(value, str) and value.lower() in ("yes", "no", "true", "false"):
            hint = "write true or false without quotes"
        else:  # every diagnostic says how to fix it
            hint = f"write {wanted} here"
        return Diagnostic(file, line, col, "E102", f"expected {wanted}, got {_describe(value)}", hint, where)
    if etype in ("literal_error", "enum"):
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        return Diagnostic(file, line, col, "E103", f"{_describe(value)} is not allowed here",
                          choices_hint(str(value), expected) if expected else "", where)
    if etype == "string_pattern_mismatch":
        pattern = str((err.get("ctx") or {}).get("pattern", ""))
        hint = {
            r"^\d+\.\d+\.\d+$": "use a version like 1.0.0",
        }.get(pattern, "use lowercase letters, digits, dots and dashes (e.g. wu2025.refractory-mas)"
              if "a-z0-9" in pattern else f"must match {pattern}")
        if "_]*$" in pattern:
            hint = "an alias is lowercase letters, digits and underscores, starting with a letter"
        return Diagnostic(file, line, col, "E103", f"{_describe(value)} has the wrong form", hint, where)
    if etype in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        limit = err["msg"].replace("Input should be ", "").rstrip(".")
        return Diagnostic(file, line, col, "E114", f"impossible value {value!r}: must be {limit}",
                          "check the number and its sign", where)
    if etype in ("too_short", "too_long"):
        return Diagnostic(file, line, col, "E103", err["msg"].rstrip("."), "", where)
    return Diagnostic(file, line, col, "E103", err["msg"].rstrip("."), "", where)


def _condition_kind_problem(value: Any, keys: tuple[str, ...]) -> tuple[str, str]:
    if not isinstance(value, dict):
        return (f"a condition must be a mapping with one kind, got {_describe(value)}",
                "start it with one of: " + ", ".join(keys))
    present = list(value)
    known = [k for k in present if k in keys]
    if len(known) > 1:
        return (f"a condition has several kinds ({', '.join(known)})",
                "wrap them in 'all:' or 'any:' as a list, one kind per item")
    unknown = [k for k in present if k not in keys]
    if known and unknown:
        return (f"unexpected key '{unknown[0]}' beside '{known[0]}'",
                f"move it inside '{known[0]}:' (indent it) or remove it")
    if unknown:
        hint = did_you_mean(str(unknown[0]), keys) or ("expected one of: " + ", ".join(keys))
        return f"unknown condition kind '{unknown[0]}'", hint
    return "empty condition", "expected one of: " + ", ".join(keys)
