"""Plain data and numpy arrays as JSON + named arrays: how checkpoints store state, no pickle.

`encode(value)` turns nested plain values into a JSON-able tree and a dict of arrays (stored as
`.npz` members and loaded with `allow_pickle=False`); `decode(tree, arrays)` gives the value
back. What JSON cannot say is tagged with a one-key object whose key starts with `$`:

    {"$array": "a3"}                 a numpy array (by member name)
    {"$scalar": ["float32", 0.5]}    a numpy scalar, with its dtype
    {"$float": "nan"}                a non-finite float ("nan", "inf", "-inf")
    {"$bytes": "aGk="}               bytes (base64)
    {"$tuple": [...]}                a tuple (`$set`, `$frozenset`: a set, a frozenset)
    {"$dict": [[key, value], ...]}   a dict with a key that is not a plain string
    {"$type": ["name", tree]}        a value of a registered type (`register`)

Types outside plain data (a Flower record, say) are registered by the layer that knows them
(`register`), so this module imports nothing but numpy. Anything else is refused with its path
in the value: a checkpoint holds data, never code.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Tree = Any
"""A JSON-able value: None, bool, int, float, str, list, dict with str keys."""


class StateError(ValueError):
    """A value that cannot be stored as data (names where in the value it sits)."""


@dataclass(frozen=True)
class _Codec:
    cls: type
    to_plain: Callable[[Any], Any]
    from_plain: Callable[[Any], Any]


_TYPES: dict[str, _Codec] = {}


def register(
    name: str, cls: type, to_plain: Callable[[Any], Any], from_plain: Callable[[Any], Any]
) -> None:
    """Store instances of `cls` as `to_plain(value)` (plain data and arrays), tagged `name`;
    `from_plain` rebuilds them. Registering a name again replaces it."""
    _TYPES[name] = _Codec(cls, to_plain, from_plain)


def encode(value: Any) -> tuple[Tree, dict[str, np.ndarray]]:
    """(JSON-able tree, arrays by member name) for `value`; raises StateError."""
    arrays: dict[str, np.ndarray] = {}
    return _enc(value, arrays, "$"), arrays


def _enc(v: Any, arrays: dict[str, np.ndarray], path: str) -> Tree:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$float": repr(v)}
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode("ascii")}
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            raise StateError(f"{path}: an object array cannot be stored as data")
        name = f"a{len(arrays)}"
        arrays[name] = v
        return {"$array": name}
    if isinstance(v, np.generic):
        if isinstance(v, np.object_):
            raise StateError(f"{path}: a numpy object scalar cannot be stored as data")
        return {"$scalar": [v.dtype.str, _enc(v.item(), arrays, path)]}
    if isinstance(v, tuple | set | frozenset):
        tag = {tuple: "$tuple", set: "$set", frozenset: "$frozenset"}[type(v)]
        items = v if isinstance(v, tuple) else sorted(v, key=repr)  # a fixed order on disk
        return {tag: [_enc(x, arrays, f"{path}[{i}]") for i, x in enumerate(items)]}
    if isinstance(v, list):
        return [_enc(x, arrays, f"{path}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in v):
            return {k: _enc(x, arrays, f"{path}.{k}") for k, x in v.items()}
        return {
            "$dict": [
                [_enc(k, arrays, f"{path}<key>"), _enc(x, arrays, f"{path}[{k!r}]")]
                for k, x in v.items()
            ]
        }
    for name, codec in _TYPES.items():
        if isinstance(v, codec.cls):  # subclasses too (a DecodedArray is an Array)
            return {"$type": [name, _enc(codec.to_plain(v), arrays, f"{path}<{name}>")]}
    raise StateError(
        f"{path}: {type(v).__module__}.{type(v).__qualname__} is not plain data (None, bool, "
        "int, float, str, list, tuple, dict, numpy arrays and scalars"
        + (f", or a registered type: {', '.join(sorted(_TYPES))}" if _TYPES else "")
        + ")"
    )


def is_data(value: Any) -> bool:
    """Whether `value` can be stored (`encode` accepts it)."""
    try:
        encode(value)
    except StateError:
        return False
    return True


def decode(tree: Tree, arrays: dict[str, np.ndarray]) -> Any:
    """The value `encode` stored; raises StateError on a tree it did not write."""
    return _dec(tree, arrays, "$")


def _dec(t: Tree, arrays: dict[str, np.ndarray], path: str) -> Any:
    if t is None or isinstance(t, bool | int | float | str):
        return t
    if isinstance(t, list):
        return [_dec(x, arrays, f"{path}[{i}]") for i, x in enumerate(t)]
    if not isinstance(t, dict):
        raise StateError(f"{path}: unexpected {type(t).__name__} in a stored state")
    if len(t) == 1:
        ((tag, body),) = t.items()
        if tag == "$array":
            if body not in arrays:
                raise StateError(f"{path}: array {body!r} is missing from the file")
            return arrays[body]
        if tag == "$scalar":
            dtype, value = body
            return np.dtype(dtype).type(_dec(value, arrays, path))
        if tag == "$bytes":
            return base64.b64decode(body, validate=True)
        if tag == "$float":
            if body not in ("nan", "inf", "-inf"):
                raise StateError(f"{path}: {body!r} is not a non-finite float")
            return float(body)
        if tag in ("$tuple", "$set", "$frozenset"):
            items = [_dec(x, arrays, f"{path}[{i}]") for i, x in enumerate(body)]
            return {"$tuple": tuple, "$set": set, "$frozenset": frozenset}[tag](items)
        if tag == "$dict":
            return {_dec(k, arrays, path): _dec(v, arrays, f"{path}[{k!r}]") for k, v in body}
        if tag == "$type":
            name, plain = body
            if name not in _TYPES:
                raise StateError(
                    f"{path}: stored type {name!r} is not registered here "
                    f"(known: {', '.join(sorted(_TYPES)) or 'none'})"
                )
            return _TYPES[name].from_plain(_dec(plain, arrays, f"{path}<{name}>"))
    bad = [k for k in t if not isinstance(k, str) or k.startswith("$")]
    if bad:
        raise StateError(f"{path}: unknown tag {bad[0]!r} in a stored state")
    return {k: _dec(x, arrays, f"{path}.{k}") for k, x in t.items()}
