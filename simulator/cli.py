"""`fedgan`: run, validate, inspect and list scenarios from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulator.summary import summary_tables

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="A federated, fairness-aware GAN simulator: run scenarios, inspect per-group metrics.",
)
console = Console()
err = Console(stderr=True)

BUNDLED = Path(__file__).resolve().parent.parent / "scenarios"


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=2)


def _load(path: Path, overrides: list[str]):  # type: ignore[no-untyped-def]
    from simulator.scenario import ScenarioError, load

    try:
        return load(path, overrides)
    except ScenarioError as exc:
        _fail(str(exc))


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted overrides, e.g. federation.rounds=5.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    centralized: Annotated[
        bool,
        typer.Option(
            "--centralized", help="Run the matched centralized twin (same generator steps)."
        ),
    ] = False,
    threads: Annotated[
        int,
        typer.Option(
            help="torch CPU threads. Tiny GAN layers gain nothing from more, and oversubscribed "
            "cores make torch's thread pool spin: 1 is the fast default."
        ),
    ] = 1,
) -> None:
    """Run a scenario (federated if it has a `federation` section) and write its run folder."""
    import torch

    from simulator.centralized import run_centralized
    from simulator.data import DataError
    from simulator.registry import RegistryError

    s = _load(scenario, overrides or [])
    if centralized:
        s = s.centralized_twin()
    if threads:
        torch.set_num_threads(threads)
    if s.federated:
        from simulator.engines.runner import check_scenario
        from simulator.scenario import ScenarioError

        problems = check_scenario(s)
        if problems:
            _fail(str(ScenarioError(str(scenario), problems)))
    f = s.federation
    what = (
        f"federated on {s.engine.name}: {s.partition.n_clients} clients "
        f"({s.partition.name}), {f.rounds} rounds × {f.local_steps} local steps, "
        f"federating {f.federate}, strategy {s.strategy.name}"
        if f
        else f"centralized, {s.train.steps} generator steps"
    )
    console.print(
        f"[bold]{s.name}[/bold]: {what}; dataset {s.data.dataset}, objective "
        f"{s.gan.objective}, Lipschitz control {s.gan.lipschitz.name}"
    )
    total = f.rounds if f else s.train.steps
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("starting", total=total)

        def on_eval(step: int, _total: int, ev) -> None:  # type: ignore[no-untyped-def]
            if ev is not None:
                sm = ev.summary
                progress.update(
                    task,
                    description=(
                        f"{'round' if f else 'step'} {step}: "
                        f"recall {sm.get('recall', float('nan')):.3f}"
                        f" worst group {sm.get('worst_group_recall', float('nan')):.3f}"
                        f" modes {sm.get('modes_captured', float('nan')):.0f}"
                    ),
                )
            progress.update(task, completed=step)

        try:
            if f:
                from server.loop import ROUND_HOOKS
                from simulator.engines.runner import run_federated

                ROUND_HOOKS.append(on_eval)
                result = run_federated(s, out)
            else:
                result = run_centralized(s, out, on_eval=on_eval)
        except (DataError, RegistryError, ValueError) as exc:
            _fail(str(exc))
    for table in summary_tables(result.metrics):
        console.print(table)
    console.print(f"run folder: [bold]{result.path}[/bold]", soft_wrap=True)


@app.command()
def validate(
    scenarios: Annotated[list[Path], typer.Argument(help="Scenario YAML files.")],
) -> None:
    """Check scenario files; print every error with its YAML path."""
    from simulator.scenario import ScenarioError, load

    bad = 0
    for p in scenarios:
        try:
            load(p)
            console.print(f"[green]ok[/green] {p}")
        except ScenarioError as exc:
            bad += 1
            err.print(f"[red]invalid[/red] {exc}", highlight=False)
    if bad:
        raise typer.Exit(code=2)


@app.command("scenarios")
def list_scenarios() -> None:
    """List the bundled scenarios."""
    from simulator.scenario import ScenarioError, load

    t = Table(title=f"bundled scenarios ({BUNDLED})")
    t.add_column("file")
    t.add_column("description")
    for p in sorted(BUNDLED.rglob("*.yaml")):
        try:
            desc = load(p).description
        except ScenarioError:
            desc = "[red](invalid)[/red]"
        t.add_row(str(p.relative_to(BUNDLED)), desc)
    console.print(t)


@app.command()
def inspect(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    round_: Annotated[
        int | None, typer.Option("--round", help="Round/step (default: last).")
    ] = None,
    by: Annotated[str, typer.Option(help="group | client | metric")] = "group",
) -> None:
    """Per-group, per-client or headline tables of one evaluation of a run."""
    import pandas as pd

    from simulator.store import load_run
    from simulator.summary import main_scope

    try:
        r = load_run(run_dir)
    except FileNotFoundError as exc:
        _fail(str(exc))
    df = r.metrics
    if df.empty:
        _fail(f"{run_dir} has no metrics yet")
    if by not in ("group", "client", "metric"):
        _fail(f"--by must be group, client or metric, got {by!r}")
    scope = main_scope(df)
    if by == "client":
        sub = df[(df["scope"] == "client") & (df["group"] == "")]
        if sub.empty:
            _fail(f"{run_dir} has no per-client metrics (a centralized run?)")
    else:
        sub = df[df["scope"] == scope]
    rounds = sorted(sub["round"].unique())
    rnd = int(rounds[-1]) if round_ is None else round_
    sub = sub[sub["round"] == rnd]
    if sub.empty:
        _fail(f"no evaluation at round {rnd}; rounds: {[int(x) for x in rounds]}")
    table: pd.DataFrame
    if by == "group":
        g = sub[sub["group"] != ""]
        table = g.pivot_table(
            index=["group_by", "group"], columns="metric", values="value", aggfunc="first"
        )
        clients = df[(df["scope"] == "client") & (df["group"] != "") & (df["round"] == rnd)]
        if len(clients):  # client × group recall on each client's own held-out data
            console.print(f"[bold]client × group recall[/bold] (round {rnd})")
            console.print(
                clients[clients["metric"] == "eval.recall"]
                .pivot_table(index="client", columns="group", values="value", aggfunc="first")
                .to_string(float_format=lambda v: f"{v:.3f}")
            )
    elif by == "client":
        table = sub.pivot_table(index="client", columns="metric", values="value", aggfunc="first")
    else:
        table = sub[(sub["group"] == "")].pivot_table(
            index="metric", values="value", aggfunc="first"
        )
    console.print(f"[bold]{run_dir}[/bold] {scope if by != 'client' else 'client'} round {rnd}")
    with pd.option_context("display.max_columns", 50, "display.width", 200):
        console.print(table.to_string(float_format=lambda v: f"{v:.3f}"))


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])
