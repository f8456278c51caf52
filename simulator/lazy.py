"""Modules imported on first use, for the modules a scenario's validation reads.

The schema needs the registries of objectives, Lipschitz controls and optimizers — names,
dataclasses, signatures — but not torch, which costs a second to import: `fedgan validate`
must answer in under one. Such a module binds `torch = lazy("torch", globals(), "torch")`
(the real import under `TYPE_CHECKING`, for the type checker); the first attribute read
imports torch and puts the real module in the name's place, so later calls pay nothing.
"""

from __future__ import annotations

import importlib
from typing import Any


class _Lazy:
    """Stands for module `name` in `namespace[alias]` until the first attribute is read."""

    __slots__ = ("_name", "_namespace", "_alias")

    def __init__(self, name: str, namespace: dict[str, Any], alias: str) -> None:
        self._name = name
        self._namespace = namespace
        self._alias = alias

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        if self._namespace.get(self._alias) is self:
            self._namespace[self._alias] = module  # from now on, the module itself
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def lazy(name: str, namespace: dict[str, Any], alias: str) -> Any:
    """A stand-in for module `name`, bound as `namespace[alias]` (a module's `globals()`)."""
    return _Lazy(name, namespace, alias)
