"""The report's dataclasses as JSON, and back: one codec driven by their type hints.

report.json is the contract programs read, and the dataclasses are how
fedsecure itself reads it. Deriving both directions from the dataclasses'
own fields and type hints keeps them from drifting apart: a field added to a
finding is written, read back and checked with nothing else to update.

Reading never converts a value, it only checks it (an int where a float is
expected stays that int), so that ``from_json`` then ``to_json`` gives back
JSON equal to what was read. The one exception is null in a float field:
``to_json`` writes a non-finite float (an undefined metric, e.g. accuracy on
no samples) as null, so null reads back as NaN, which writes as null again.

Two conventions, both declared on the dataclasses themselves:

* a field whose JSON key is not its name (``Verdict.passed`` is ``"pass"``,
  a Python keyword) carries ``metadata=json_key("pass")``;
* a base class whose JSON names the concrete class under one key (an attack
  finding's ``"attack"``) defines ``json_tag`` (that key) and
  ``json_variants()`` (the name -> class mapping). Reading picks the class
  from the mapping, writing puts the class's name back under the key.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
import types
from collections.abc import Mapping
from typing import Any, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from fedsecure.errors import ReportFormatError

T = TypeVar("T")
# Whether the read in progress skips unknown fields (see from_json); a context variable, so that the
# recursive readers need not pass it along.
_SKIP_UNKNOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("skip_unknown_fields", default=False)

_JSON_KEY = "json_key"


def json_key(key: str) -> dict[str, str]:
    """Field metadata naming the field's JSON key, where it differs from the field's name."""
    return {_JSON_KEY: key}


def to_json(value: object) -> Any:
    """The JSON-ready form of ``value``: dataclasses become dicts, non-finite floats null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        form = {_key(f): to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        tag = getattr(type(value), "json_tag", None)
        if tag is not None:
            form[tag] = _variant_name(type(value))
        return form
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # an undefined metric is null, never NaN (which is not JSON)
    return value


def from_json(kind: type[T], data: object, where: str = "report", *, unknown_fields: bool = False) -> T:
    """``data`` (parsed JSON) read as ``kind``, a dataclass of the report.

    Args:
        kind: the dataclass to read.
        data: what ``json.load`` gave.
        where: the path of ``data`` in the document, for error messages.
        unknown_fields: skip fields ``kind`` does not have (a report of another minor
            version: an older one may hold a field since removed, a newer one a field
            since added) instead of refusing them (this version's reports: an unknown
            field there means the report was altered).

    Raises:
        ReportFormatError: ``data`` does not have ``kind``'s form; the message
            names the field (e.g. ``report.scenarios[1].cost.train_seconds``).
    """
    token = _SKIP_UNKNOWN.set(unknown_fields)
    try:
        return cast(T, _read(kind, data, where))
    finally:
        _SKIP_UNKNOWN.reset(token)


def _key(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get(_JSON_KEY, field.name))


def _variant_name(cls: type) -> str:
    for name, variant in cls.json_variants().items():  # type: ignore[attr-defined]
        if variant is cls:
            return str(name)
    raise TypeError(f"{cls.__name__} is not in its base's json_variants()")  # a bug: a kind left unregistered


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _describe(data: object) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return f"the boolean {str(data).lower()}"
    if isinstance(data, (int, float)):
        return f"the number {data!r}"
    if isinstance(data, str):
        return f"the string {data[:40]!r}"
    return "a list" if isinstance(data, list) else "an object"


_EXPECTED = {str: "a string", bool: "a boolean"}


def _read(hint: Any, data: object, where: str) -> Any:
    if hint is Any:
        return data  # a free-form section (e.g. the spec as it was run): JSON values as they are
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return _read_union(get_args(hint), data, where)
    if origin is list:
        if not isinstance(data, list):
            raise ReportFormatError(f"{where}: expected a list, found {_describe(data)}")
        (item,) = get_args(hint)
        return [_read(item, value, f"{where}[{i}]") for i, value in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise ReportFormatError(f"{where}: expected an object, found {_describe(data)}")
        _, item = get_args(hint)
        return {key: _read(item, value, f"{where}.{key}") for key, value in data.items()}
    if hint is float:
        if data is None:
            return math.nan  # to_json wrote a non-finite float as null
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return data
        raise ReportFormatError(f"{where}: expected a number, found {_describe(data)}")
    if hint is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        raise ReportFormatError(f"{where}: expected an integer, found {_describe(data)}")
    if hint in (str, bool):
        if isinstance(data, hint):
            return data
        raise ReportFormatError(f"{where}: expected {_EXPECTED[hint]}, found {_describe(data)}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _read_dataclass(hint, data, where)
    raise TypeError(f"the report codec cannot read {hint!r} (at {where})")  # a bug in a finding's type hints


def _read_union(options: tuple[Any, ...], data: object, where: str) -> Any:
    if data is None and type(None) in options:
        return None
    rest = [option for option in options if option is not type(None)]
    if len(rest) == 1:
        return _read(rest[0], data, where)
    problems = []
    for option in rest:
        try:
            return _read(option, data, where)
        except ReportFormatError as exc:
            problems.append(str(exc))
    raise ReportFormatError("; or ".join(problems))


def _read_dataclass(cls: type, data: object, where: str) -> Any:
    if not isinstance(data, dict):
        raise ReportFormatError(f"{where}: expected an object, found {_describe(data)}")
    tag = getattr(cls, "json_tag", None)
    if tag is not None:
        variants: Mapping[str, type] = cls.json_variants()  # type: ignore[attr-defined]
        name = data.get(tag)
        variant = variants.get(name) if isinstance(name, str) else None
        if variant is None or not issubclass(variant, cls):
            known = ", ".join(n for n, v in variants.items() if issubclass(v, cls))
            raise ReportFormatError(f"{where}.{tag}: {name!r} is not one of {known}")
        cls, data = variant, {k: v for k, v in data.items() if k != tag}
    fields = {_key(f): f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in data if key not in fields]
    if unknown and not _SKIP_UNKNOWN.get():
        raise ReportFormatError(f"{where}: unknown field {unknown[0]!r} (not written by this version of fedsecure)")
    hints = _hints(cls)
    values = {}
    for key, field in fields.items():
        if key in data:
            values[field.name] = _read(hints[field.name], data[key], f"{where}.{key}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ReportFormatError(f"{where}: missing field {key!r}")
        # else: a field added after this report was written (same schema major): its default stands
    return cls(**values)
