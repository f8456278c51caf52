"""Named registries with `module:attr` and `path/to/file.py:attr` plug-ins, and the one check of
a plug-in's parameters against its signature that every registry uses."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

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
            return self._items[name]
        if ":" in name:
            obj = load_plugin(name, self.kind)
            if self._check is not None:
                problem = self._check(obj)
                if problem:
                    raise RegistryError(f"{self.kind} plug-in {name!r}: {problem}")
            return obj  # type: ignore[return-value]
        raise RegistryError(f"unknown {self.kind} {name!r}; allowed: {self.allowed()}")


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
        return ParamCheck(sorted(unknown), missing, list(self.params))


@dataclass(frozen=True)
class ParamCheck:
    """Parameters a callable does not take (`unknown`) and required ones not given."""

    unknown: list[str]
    missing: list[str]
    allowed: list[str]

    def problems(self, kind: str, name: str) -> list[str]:
        """One message for the unknown and one for the missing parameters, naming both sides."""
        out = []
        if self.unknown:
            out.append(
                f"{kind} {name!r}: unknown parameter(s) {_quoted(self.unknown)}; "
                f"allowed: {', '.join(self.allowed) or '(none)'}"
            )
        if self.missing:
            out.append(f"{kind} {name!r}: missing required parameter(s) {_quoted(self.missing)}")
        return out

    def by_key(self, path: str, name: str) -> list[str]:
        """The same as 'path.key: message' strings, one per parameter (scenario errors)."""
        allowed = ", ".join(self.allowed) or "(none)"
        return [
            f"{path}.{k}: {name} has no such parameter; allowed: {allowed}" for k in self.unknown
        ] + [f"{path}.{k}: required by {name}" for k in self.missing]


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
    )
