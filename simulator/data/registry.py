"""The dataset registry and `load_dataset`, which checks parameters before calling a factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fedgan.simulator.data.base import DataError, Dataset, check_int
from fedgan.simulator.registry import Registry, RegistryError, Signature, is_path_type, signature

# A factory is called as factory(n_samples=..., seed=..., **params) and returns a Dataset.
# Callable[..., Dataset] rather than a Protocol with **params: factories have concrete keyword
# parameters, which a `**params: Any` protocol would reject.
DatasetFactory = Callable[..., Dataset]

_RESERVED = ("n_samples", "seed")


def _check_factory(obj: object) -> str | None:
    if not callable(obj):
        return f"expected a callable (n_samples, seed, **params) -> Dataset, got {obj!r}"
    return None


DATASETS: Registry[DatasetFactory] = Registry("dataset", check=_check_factory)


def _signature(name: str, factory: DatasetFactory) -> Signature:
    try:
        return signature("dataset", name, factory, reserved=_RESERVED)
    except RegistryError as exc:
        raise DataError(str(exc)) from exc


def dataset_params(name: str) -> dict[str, Any]:
    """The parameters (besides n_samples, seed) of dataset `name` and their defaults.

    A required parameter maps to `inspect.Parameter.empty`.
    """
    return _signature(name, DATASETS.get(name)).defaults()


def is_finite(name: str) -> bool:
    """Whether dataset `name` is a finite set of rows (a table, the digits), whose size by
    default is every row: its factory's `n_samples` defaults to None. False for generated
    data and for a name that does not resolve (reported elsewhere)."""
    try:
        sig = signature("dataset", name, DATASETS.get(name))
    except Exception:  # noqa: BLE001 - an unknown or broken plug-in: the name's check says so
        return False
    p = sig.params.get("n_samples")
    return p is not None and p.default is None


def path_params(name: str) -> list[str]:
    """The parameters of dataset `name` that name files (annotated `os.PathLike` / `Path`):
    a scenario resolves them against the file that gives them. [] for an unknown name."""
    try:
        sig = signature("dataset", name, DATASETS.get(name), reserved=_RESERVED)
    except Exception:  # noqa: BLE001 - an unknown or broken plug-in: the name's check says so
        return []
    return [k for k, tp in sig.expected.items() if is_path_type(tp)]


def _check_params(name: str, sig: Signature, params: Mapping[str, Any]) -> None:
    for reserved in _RESERVED:
        if reserved in params:
            raise DataError(
                f"dataset {name!r}: pass {reserved!r} as load_dataset's argument, not in params"
            )
        if not sig.accepts(reserved):
            raise DataError(f"dataset {name!r}: the factory does not accept {reserved!r}")
    check = sig.check(params)
    problems = check.problems("dataset", name)
    if check.unknown:
        raise DataError(problems[0], check.unknown[0])
    if check.wrong:  # a parameter of the wrong type: named, so the dry run drops it and goes on
        key, msg = next(iter(check.wrong.items()))
        raise DataError(f"dataset {name!r}: {key} {msg}", key)
    if problems:
        raise DataError(problems[0])


def load_dataset(
    name: str, n_samples: int | None, seed: int, params: Mapping[str, Any] | None = None
) -> Dataset:
    """Build dataset `name` (a registered name or a `module:attr` / `file.py:attr` plug-in).

    Parameters
    ----------
    name : str
        Registry name or plug-in spec.
    n_samples : int or None
        Number of samples; None means the dataset's default (all rows for finite data).
    seed : int
        Seed for every random choice the factory makes.
    params : mapping, optional
        Extra keyword parameters, checked against the factory's signature first.

    Raises
    ------
    RegistryError
        Unknown name (the message lists the allowed names) or a broken plug-in.
    DataError
        Unknown/missing parameter, a bad value, or a bad file; the message names the dataset.
    """
    factory = DATASETS.get(name)
    params = dict(params or {})
    n = None if n_samples is None else check_int("n_samples", n_samples, minimum=1)
    s = check_int("seed", seed, minimum=0)
    _check_params(name, _signature(name, factory), params)
    try:
        ds = factory(n_samples=n, seed=s, **params)
    except DataError as exc:
        msg = str(exc)
        # Factories' own messages rarely say which dataset; avoid saying it twice.
        text = msg if msg.startswith("dataset ") else f"dataset {name!r}: {msg}"
        raise DataError(text, exc.key) from exc
    except (ValueError, TypeError, OSError, KeyError) as exc:
        # Plug-in code raises whatever it likes; give it the dataset's name and keep the cause.
        raise DataError(f"dataset {name!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(ds, Dataset):
        raise DataError(f"dataset {name!r}: the factory returned {type(ds).__name__}, not Dataset")
    return ds
