"""Named registries with `module:attr` and `path/to/file.py:attr` plug-ins, and the one check of
a plug-in's parameters against its signature that every registry uses."""

from __future__ import annotations

import collections.abc as cabc
import importlib
import importlib.util
import inspect
import numbers
import os
import sys
import types
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Generic, TypeVar

from numpy import bool_ as np_bool  # not a bool subclass: a parameter check must know it

T = TypeVar("T")


class RegistryError(ValueError):
    """An unknown name, or a plug-in that cannot be imported or has the wrong type."""


def load_plugin(spec: str, kind: str) -> object:
    """Import `module:attr` or `path/to/file.py:attr` and return the attribute.

    Raises RegistryError naming the file or module and what was expected.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise RegistryError(
            f"{kind} plug-in {spec!r} must look like 'module:attr' or 'file.py:attr'"
        )
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise RegistryError(f"{kind} plug-in file {str(path)!r} does not exist")
        mod_name = f"fedgan_plugin_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(mod_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise RegistryError(f"{kind} plug-in file {str(path)!r} cannot be imported")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except Exception as exc:  # the user's code: report, whatever it raised
                del sys.modules[mod_name]
                raise RegistryError(
                    f"{kind} plug-in file {str(path)!r} failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        where = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise RegistryError(
                f"{kind} plug-in module {target!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        where = target
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RegistryError(f"{kind} plug-in {where!r} has no attribute {attr!r}") from None


def subclass_of(base: type, name: str | None = None) -> Callable[[object], str | None]:
    """A plug-in check (`Registry(check=...)`): the plug-in must be a subclass of `base`
    (named `name` in the message, default its module path)."""
    shown = name or f"{base.__module__}.{base.__qualname__}"

    def check(obj: object) -> str | None:
        if isinstance(obj, type) and issubclass(obj, base):
            return None
        return f"expected a subclass of {shown}, got {obj!r}"

    return check


@dataclass(frozen=True)
class _Deferred:
    """A registry entry imported on first use (`Registry.add_lazy`)."""

    spec: str


class Registry(Generic[T]):
    """A name → object table for one kind of component (dataset, objective, ...).

    `get` also accepts `module:attr` or `file.py:attr` plug-ins; `check` (optional) validates
    a plug-in's type and returns an error message or None.
    """

    def __init__(self, kind: str, check: Callable[[object], str | None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._check = check

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def add_lazy(self, name: str, spec: str) -> None:
        """Register `name` as `module:attr`, imported on the first `get`: a built-in whose
        module is heavy (torch) is known by name — listed, suggested, checked as a name —
        without importing it, so a scenario that does not use it never pays for it."""
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = _Deferred(spec)  # type: ignore[assignment]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def allowed(self) -> str:
        return ", ".join(self.names()) + ", or a 'module:attr' / 'file.py:attr' plug-in"

    def get(self, name: str) -> T:
        if name in self._items:
            item = self._items[name]
            if isinstance(item, _Deferred):
                module, _, attr = item.spec.partition(":")
                item = getattr(importlib.import_module(module), attr)
                self._items[name] = item
            return item
        if ":" in name:
            obj = load_plugin(name, self.kind)
            if self._check is not None:
                problem = self._check(obj)
                if problem:
                    raise RegistryError(f"{self.kind} plug-in {name!r}: {problem}")
            return obj  # type: ignore[return-value]
        raise RegistryError(
            f"unknown {self.kind} {name!r};{self.suggest(name)} allowed: {self.allowed()}"
        )

    def suggest(self, name: str) -> str:
        """' did you mean 'x'?' for a name close to a registered one (a typo), else ''."""
        import difflib

        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.75)
        return f" did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Signature:
    """What a plug-in's signature says about the parameters a scenario may give it.

    `positional`: the leading positional parameters (their names), which the caller passes;
    `params`: the parameters after them that can be set by keyword, in order (minus any the
    caller reserves); `names`: every parameter's name; whether it also takes `*args` and
    `**kwargs`.
    """

    positional: tuple[str, ...]
    params: dict[str, inspect.Parameter]
    names: frozenset[str]
    var_positional: bool
    var_keyword: bool
    expected: dict[str, Any] = field(default_factory=dict)
    """The type each settable parameter's value must have: its annotation, or its default's
    type where it has none; parameters with neither (or an annotation that cannot be read) are
    absent, hence not checked."""

    def defaults(self) -> dict[str, Any]:
        """Each settable parameter's default (`inspect.Parameter.empty` when required)."""
        return {n: p.default for n, p in self.params.items()}

    def accepts(self, name: str) -> bool:
        """Whether the callable can be given `name` (by name, or through `**kwargs`)."""
        return name in self.names or self.var_keyword

    def check(
        self, params: Mapping[str, Any], supplied: Collection[str] = (), open_kwargs: bool = True
    ) -> ParamCheck:
        """Which of `params` it does not take and which required ones are missing (`supplied`:
        set by the caller, so never missing). `open_kwargs`: `**kwargs` takes any name (False
        where they are forwarded to a parent whose parameters the scenario may not set)."""
        open_ = self.var_keyword and open_kwargs
        unknown = [] if open_ else [str(k) for k in params if k not in self.params]
        missing = [
            n
            for n, p in self.params.items()
            if p.default is inspect.Parameter.empty and n not in params and n not in supplied
        ]
        wrong = {}
        for k, v in params.items():
            problem = type_problem(v, self.expected[k]) if k in self.expected else None
            if problem:
                wrong[str(k)] = problem
        return ParamCheck(sorted(unknown), missing, list(self.params), wrong)


@dataclass(frozen=True)
class ParamCheck:
    """Parameters a callable does not take (`unknown`) and required ones not given."""

    unknown: list[str]
    missing: list[str]
    allowed: list[str]
    wrong: dict[str, str] = field(default_factory=dict)
    """Parameters whose value has the wrong type → 'must be <what>, got <value> (<kind>)'."""

    def problems(self, kind: str, name: str) -> list[str]:
        """One message for the unknown and one for the missing parameters, naming both sides,
        then one per parameter of the wrong type."""
        out = []
        if self.unknown:
            out.append(
                f"{kind} {name!r}: unknown parameter(s) {_quoted(self.unknown)}; "
                f"allowed: {', '.join(self.allowed) or '(none)'}"
            )
        if self.missing:
            out.append(f"{kind} {name!r}: missing required parameter(s) {_quoted(self.missing)}")
        out += [f"{kind} {name!r}: {k} {msg}" for k, msg in self.wrong.items()]
        return out

    def by_key(self, path: str, name: str) -> list[str]:
        """The same as 'path.key: message' strings, one per parameter (scenario errors)."""
        allowed = ", ".join(self.allowed) or "(none)"
        return (
            [f"{path}.{k}: {name} has no such parameter; allowed: {allowed}" for k in self.unknown]
            + [f"{path}.{k}: required by {name}" for k in self.missing]
            + [f"{path}.{k}: {name}: {k} {msg}" for k, msg in self.wrong.items()]
        )


def _quoted(names: list[str]) -> str:
    return ", ".join(map(repr, names))


def signature(
    kind: str, name: str, fn: Callable[..., Any], skip: int = 0, reserved: Collection[str] = ()
) -> Signature:
    """Read `fn`'s signature: the first `skip` positional parameters are the caller's (so are
    the names in `reserved`); the rest can be set from a scenario. Raises RegistryError when
    the signature cannot be read (some builtins)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{kind} {name!r}: cannot read its signature: {exc}") from exc
    ps = list(sig.parameters.values())
    positional = [p.name for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = set(positional[:skip]) | set(reserved)
    params = {
        p.name: p
        for p in ps
        if p.name not in taken and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return Signature(
        tuple(positional[:skip]),
        params,
        frozenset(sig.parameters),
        any(p.kind is p.VAR_POSITIONAL for p in ps),
        any(p.kind is p.VAR_KEYWORD for p in ps),
        expected_types(fn, params),
    )


# --- parameter types ------------------------------------------------------------------------

_SCALAR_DEFAULTS = (bool, int, float, str)
"""A default's type stands for the missing annotation only for these: a list or a mapping
default says little about its elements."""


def expected_types(
    fn: Callable[..., Any], params: Mapping[str, inspect.Parameter]
) -> dict[str, Any]:
    """The type each of `params` must have: its annotation (read one by one, in `fn`'s module:
    one unreadable annotation — a name imported only for type checkers — leaves the others
    checked), else its default's type when that is a plain scalar; else nothing."""
    globalns = _globals_of(fn)
    out: dict[str, Any] = {}
    for name, p in params.items():
        ann: Any = p.annotation
        if isinstance(ann, str):
            try:
                ann = eval(ann, globalns, {})  # the plug-in's own annotation, in its module
            except Exception:  # noqa: BLE001 - unreadable: leave the parameter unchecked
                continue
            if isinstance(ann, str | typing.ForwardRef):  # a forward reference: unreadable
                continue
        if ann is inspect.Parameter.empty:
            d = p.default
            if d is inspect.Parameter.empty or d is None or type(d) not in _SCALAR_DEFAULTS:
                continue
            ann = type(d)
        out[name] = ann
    return out


def _globals_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """The namespace `fn`'s string annotations are written in (its module's)."""
    target = inspect.unwrap(fn) if callable(fn) else fn
    g = getattr(target, "__globals__", None)
    if isinstance(g, dict):
        return g
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    return vars(module) if module is not None else {}


def is_path_type(tp: Any) -> bool:
    """Whether annotation `tp` takes a file path (`os.PathLike`, `Path`, alone or in a union
    with str or None): a parameter that names a file."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(is_path_type(a) for a in typing.get_args(tp))
    return (origin if origin is not None else tp) in _PATHS


def type_problem(value: Any, expected: Any) -> str | None:
    """'must be <what>, got <value> (<its kind>)' when `value` (a YAML value) does not fit
    `expected` (an annotation), else None. An int fits a float; None fits only where the
    annotation allows it; a list fits a tuple or a sequence; annotations it cannot judge
    accept all."""
    try:
        if _fits(value, expected) is not False:
            return None
        want = _describe(expected)
    except Exception:  # noqa: BLE001 - an exotic annotation: never refuse a value on it
        return None
    if value is None or isinstance(value, bool):  # as YAML writes them
        return f"must be {want}, got {str(value).lower() if value is not None else 'null'}"
    got = repr(value)
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"must be {want}, got {got} ({_yaml_kind(value)})"


_SEQUENCES: tuple[Any, ...] = (
    list,
    tuple,
    set,
    frozenset,
    cabc.Sequence,
    cabc.MutableSequence,
    cabc.Collection,
    cabc.Iterable,
    cabc.Set,
    cabc.MutableSet,
)
_MAPPINGS: tuple[Any, ...] = (dict, cabc.Mapping, cabc.MutableMapping)
_PATHS: tuple[Any, ...] = (os.PathLike, Path, PurePath)


def _fits(value: Any, tp: Any) -> bool | None:
    """True/False when `value` does (not) fit annotation `tp`; None when it cannot tell (a
    class YAML never produces, a Callable, a TypeVar): a parameter is never refused on a
    guess."""
    if tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _fits(value, args[0])
    if origin is typing.Union or origin is types.UnionType:
        results = [_fits(value, a) for a in args]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if origin is typing.Literal:
        return any(type(a) is type(value) and a == value for a in args)
    if tp is bool:
        return isinstance(value, bool | np_bool)
    # numbers' ABCs: numpy's scalars (from Python callers) count, a YAML `true` does not
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool | np_bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool | np_bool)
    if tp is str:
        return isinstance(value, str)
    base = origin if origin is not None else tp
    if base in _PATHS:
        return isinstance(value, str | os.PathLike)
    if base in _MAPPINGS:
        if not isinstance(value, Mapping):
            return False
        return _all_fit(value.values(), args[1]) if len(args) == 2 else True
    if base in _SEQUENCES:
        if isinstance(value, str) and base not in (cabc.Sequence, cabc.Iterable, cabc.Collection):
            return False
        if not isinstance(value, list | tuple | set | frozenset | str):
            return False
        if base is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return False
            verdicts = [_fits(v, a) for v, a in zip(value, args, strict=True)]
            return False if False in verdicts else (None if None in verdicts else True)
        return _all_fit(value, args[0]) if args else True
    return None


def _all_fit(values: Any, tp: Any) -> bool | None:
    verdicts = [_fits(v, tp) for v in values]
    return False if False in verdicts else (None if None in verdicts else True)


_NOUNS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _describe(tp: Any) -> str:
    """An annotation in words ('an integer or null', 'a list of numbers')."""
    if tp is None or tp is type(None):
        return "null"
    if tp in _NOUNS:
        return _NOUNS[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin is typing.Union or origin is types.UnionType:
        paths = any(is_path_type(a) for a in args)  # a path is written as a string
        words = [_describe(a) for a in args if a is not type(None) and not (paths and a is str)]
        if type(None) in args:
            words.append("null")
        return " or ".join(dict.fromkeys(words))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    base = origin if origin is not None else tp
    if base in _PATHS:
        return "a file path"
    if base in _MAPPINGS:
        return "a mapping"
    if base in _SEQUENCES:
        if base is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)}: " + ", ".join(_describe(a) for a in args)
        inner = args[0] if args else None
        return f"a list of {_PLURALS[inner]}" if inner in _PLURALS else "a list"
    return getattr(tp, "__name__", str(tp))


def _yaml_kind(value: Any) -> str:
    """What a YAML value is, in YAML's words."""
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    words = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return words.get(type(value), type(value).__name__)
