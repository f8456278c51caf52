"""The layers: no import cycles, no upward imports (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulator", "clients", "server", "wire")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Every module (first-party or not) `path` imports, at any depth of its code; first-party
    ones by their folder's name (`fedgan.server.loop` → `server.loop`: the installed package
    maps the repository's folders under `fedgan`)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {i.removeprefix("fedgan.") for i in out}


def test_first_party_imports_go_through_the_one_package() -> None:
    """Every first-party import names `fedgan.<folder>`: a bare `server`, `clients`, `wire`
    or `simulator` would import another project's package of that name once installed."""
    bare = sorted(
        f"{m}: {node.module if isinstance(node, ast.ImportFrom) else a.name}"
        for m, p in MODULES.items()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for a in node.names
        if (node.module if isinstance(node, ast.ImportFrom) else a.name or "")
        and str(node.module if isinstance(node, ast.ImportFrom) else a.name).split(".")[0]
        in PACKAGES
        and not (isinstance(node, ast.ImportFrom) and node.level)
    )
    assert bare == []


GRAPH = {
    m: {t for i in _imports(p) if (t := _resolve(i)) is not None and t != m}
    for m, p in MODULES.items()
}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_the_cycle_search_finds_a_cycle() -> None:
    saved = GRAPH["simulator.store"]
    GRAPH["simulator.store"] = saved | {"simulator.sweep"}  # sweep imports store
    try:
        assert any({"simulator.store", "simulator.sweep"} <= set(c) for c in _cycles())
    finally:
        GRAPH["simulator.store"] = saved


ENTRY = ("simulator.api", "simulator.sweep")
"""Entry points of the core (Python API, sweeps): they start federated runs through the
engines' runner, and import nothing of Flower or the apps themselves."""


def _where(module: str) -> str:
    if module.startswith(("simulator.engines", "simulator.cli")):
        return "orchestration"
    if module in ENTRY:
        return "entry"
    return module.split(".")[0]


# What each layer may not import (`orchestration`: simulator/engines/ and simulator/cli.py, the
# only rooms where the Flower apps and the core meet).
FORBIDDEN = {
    "simulator": ("flwr", "clients", "server", "wire", "simulator.engines", "simulator.cli"),
    "entry": ("flwr", "clients", "server", "wire", "simulator.cli"),
    "wire": ("clients", "server", "simulator.engines", "simulator.cli"),
    "clients": ("server", "simulator.engines", "simulator.cli"),
    "server": ("clients", "simulator.engines", "simulator.cli"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(layer: str) -> None:
    bad = sorted(
        f"{m} -> {i}"
        for m, p in MODULES.items()
        if _where(m) == layer
        for i in _imports(p)
        if any(i == f or i.startswith(f + ".") for f in FORBIDDEN[layer])
    )
    assert bad == []


def test_the_import_search_sees_lazy_imports() -> None:
    # The orchestration imports the apps inside functions: the search must see those.
    assert "server.app" in _imports(MODULES["simulator.engines.runner"])
    assert _where("simulator.engines.runner") == "orchestration"


SHARED_NAMES = {
    "__init__.py": "a package",
    "app.py": "each side's Flower App (Flower's own convention: clients.app, server.app)",
    "base.py": "the base class of its package (data.base: Dataset; protocols.base: Protocol)",
    "registry.py": "its package's registry (plug-ins by name)",
}
"""File names more than one package uses, each for the same role in its own package."""


def test_no_file_name_serves_two_roles() -> None:
    """A file's name says its role: outside `SHARED_NAMES` no two modules share a name (the
    move of the client found four — server_held, federation, messages, mdgan — each for two
    roles)."""
    seen: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        if module.split(".")[0] in PACKAGES:
            seen.setdefault(path.name, []).append(module)
    twice = {name: mods for name, mods in seen.items() if len(mods) > 1}
    assert set(twice) <= set(SHARED_NAMES), twice


def test_the_client_is_in_its_own_room() -> None:
    """What a client does — training, scoring, the server-held protocols' answers — lives in
    clients/, which imports the core and wire only; the core imports none of it."""
    rooms = {m.split(".")[1] for m in MODULES if m.startswith("clients.")}
    assert {"app", "training", "scoring", "answers"} <= rooms
    assert not any(m.startswith("simulator.federation") for m in MODULES)
    assert not any(m.startswith("simulator.server_held") for m in MODULES)


def test_a_run_loads_each_module_once_under_fedgan(tmp_path: Path) -> None:
    """A run imports every first-party module as `fedgan.<folder>...` only: a bare `simulator`
    or `server` module (a stray import, a lazy plug-in spec) would be a second copy of the
    module, with its own registries and classes (`type(x) is cls` fails across copies)."""
    import subprocess
    import sys

    code = (
        "import sys, fedgan\n"
        "from tests.conftest import tiny\n"
        "fedgan.run(tiny(federation={'rounds': 1}), out_dir=sys.argv[1])\n"
        "fedgan.run(tiny(federation={'rounds': 1, 'protocol': 'uagan'}), out_dir=sys.argv[1])\n"
        f"bare = sorted(m for m in sys.modules if m.split('.')[0] in {PACKAGES!r})\n"
        "assert not bare, bare\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
