"""`fedgan`: run, validate, inspect and list scenarios from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="A federated, fairness-aware GAN simulator: run scenarios, inspect per-group metrics.",
)
console = Console()
err = Console(stderr=True)

BUNDLED = Path(__file__).resolve().parent.parent / "scenarios"

HEADLINE = [
    ("precision", "precision"), ("recall", "recall"), ("density", "density"),
    ("coverage", "coverage"), ("expected_coverage", "coverage ceiling"),
    ("modes_captured", "modes captured"), ("high_quality_rate", "high quality (3σ)"),
    ("reverse_kl", "reverse KL"), ("min_mass_ratio", "min mode mass ratio"),
    ("worst_group_recall", "worst-group recall"), ("frechet_distance", "Fréchet (classifier)"),
]


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
        list[str] | None, typer.Argument(help="Dotted overrides, e.g. train.steps=2000.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 0,
) -> None:
    """Run a scenario and write its run folder."""
    import torch

    from simulator.centralized import run_centralized
    from simulator.data import DataError
    from simulator.registry import RegistryError

    s = _load(scenario, overrides or [])
    if threads:
        torch.set_num_threads(threads)
    console.print(f"[bold]{s.name}[/bold]: centralized, {s.train.steps} generator steps, "
                  f"dataset {s.data.dataset}, objective {s.gan.objective}, "
                  f"Lipschitz control {s.gan.lipschitz.name}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("training", total=s.train.steps)

        def on_eval(step: int, total: int, ev) -> None:  # type: ignore[no-untyped-def]
            sm = ev.summary
            progress.update(task, completed=step, description=(
                f"step {step}: recall {sm.get('recall', float('nan')):.3f} "
                f"coverage {sm.get('coverage', float('nan')):.3f} "
                f"modes {sm.get('modes_captured', float('nan')):.0f}"))

        try:
            result = run_centralized(s, out, on_eval=on_eval)
        except (DataError, RegistryError, ValueError) as exc:
            _fail(str(exc))
    _print_summary(result.last)
    console.print(f"run folder: [bold]{result.path}[/bold]")


def _print_summary(ev) -> None:  # type: ignore[no-untyped-def]
    t = Table(title="final evaluation (held-out real data)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key, label in HEADLINE:
        if key in ev.summary:
            v = ev.summary[key]
            t.add_row(label, f"{v:.0f}" if key == "modes_captured" else f"{v:.3f}")
    t.add_row("diagnosis", f"{ev.diagnosis.label}")
    console.print(t)
    groups = [r for r in ev.rows if r.get("metric") == "recall" and r.get("group", "") != ""]
    if groups:
        g = Table(title=f"per-group recall ({groups[0]['group_by']})")
        g.add_column("group")
        g.add_column("recall", justify="right")
        g.add_column("n real", justify="right")
        for r in groups:
            style = "red" if r["value"] < 0.5 else ""
            g.add_row(str(r["group"]), f"[{style}]{r['value']:.3f}[/{style}]" if style else
                      f"{r['value']:.3f}", str(r["n"]))
        console.print(g)


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
    round_: Annotated[int | None, typer.Option("--round", help="Round/step (default: last).")] = None,
    by: Annotated[str, typer.Option(help="group (per-group table) or metric (headline).")] = "group",
) -> None:
    """Print the metrics of one evaluation of a run."""
    from simulator.store import load_run

    try:
        r = load_run(run_dir)
    except FileNotFoundError as exc:
        _fail(str(exc))
    df = r.metrics
    if df.empty:
        _fail(f"{run_dir} has no metrics yet")
    rnd = int(df["round"].max()) if round_ is None else round_
    df = df[df["round"] == rnd]
    if df.empty:
        _fail(f"no evaluation at round {rnd}; rounds: {sorted(r.metrics['round'].unique())}")
    if by == "group":
        sub = df[df["group"] != ""]
        table = sub.pivot_table(index=["group_by", "group"], columns="metric", values="value")
    elif by == "metric":
        sub = df[df["group"] == ""]
        table = sub.pivot_table(index="metric", columns="scope", values="value")
    else:
        _fail(f"--by must be group or metric, got {by!r}")
    console.print(f"[bold]{run_dir}[/bold] round {rnd}")
    console.print(table.to_string(float_format=lambda v: f"{v:.3f}"))


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])
