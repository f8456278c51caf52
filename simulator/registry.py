"""Named registries with `module:attr` and `path/to/file.py:attr` plug-ins."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

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
