"""`fedgan`: run, validate, inspect and list scenarios from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Nothing heavy at import: `fedgan --help`, `--version` and `validate` must answer within a
# second, so torch, flwr, pandas and fairlearn are imported by the commands that use them.

if TYPE_CHECKING:
    from fedgan.simulator.scenario import Scenario

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # A traceback with every frame's locals ran to 54,721 lines (the data arrays): never.
    pretty_exceptions_show_locals=False,
    help="A federated, fairness-aware GAN simulator: run scenarios, inspect per-group metrics.",
)
# Soft wrap by default: a path or a message broken across lines can't be copied back (rich
# folds long lines at the terminal's width, 80 columns under a pipe).
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

BUNDLED = Path(__file__).resolve().parent.parent / "scenarios"


def _print_version(value: bool) -> None:
    """`--version`: the installed package's version (no simulator module is imported)."""
    if not value:
        return
    from importlib import metadata

    try:
        version = metadata.version("fedgan")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        version = "unknown (not installed)"
    console.print(f"fedgan {version}", highlight=False)
    raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """A federated, fairness-aware GAN simulator: run scenarios, inspect per-group metrics."""


def _fail(message: str) -> None:
    # The message quotes user input ('[age]', a path): print it as text, not rich markup.
    err.print("error: ", style="red", end="")
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _warn(s) -> None:  # type: ignore[no-untyped-def]
    """Print warnings about a valid scenario (e.g. a memory estimate above what is free)."""
    from fedgan.simulator.memory import scenario_warnings

    for w in scenario_warnings(s):
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)


def _load(path: Path, overrides: list[str]):  # type: ignore[no-untyped-def]
    from fedgan.simulator.scenario import ScenarioError, load

    try:
        return load(path, overrides)
    except ScenarioError as exc:
        _fail(str(exc))


def _protocol_words(s: Scenario) -> str:
    """What a federated run federates, for its header: FedAvg's federated networks and
    strategy, or a server-held protocol with its fairness weighting (strategy and `federate`
    do not apply to those)."""
    f = s.federation
    assert f is not None
    if f.protocol == "fedavg":
        return f"federating {f.federate}, strategy {s.strategy.name}"
    weighting = f.protocol_params.get("weighting")  # a validated {name, params}, or absent
    return f"protocol {f.protocol}" + (f", weighting {weighting['name']}" if weighting else "")


def _privacy_words(s: Scenario) -> str:
    """The header's privacy clause: level, σ (or the target it is calibrated to), C, δ and
    the sampling ("" without privacy)."""
    p = s.privacy
    if p is None:
        return ""
    noise = (
        f"σ {p.noise_multiplier:g}"
        if p.noise_multiplier is not None
        else f"σ calibrated to ε ≤ {p.target_epsilon:g}"
    )
    return (
        f"; {p.level}-level DP: {noise}, clip {p.clip:g}, δ {p.delta:g}, {p.sampling} "
        f"sampling, {p.accountant.upper()} accountant"
    )


@app.command()
def run(
    scenario: Annotated[Path | None, typer.Argument(help="Scenario YAML file.")] = None,
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
            min=0,
            help="torch CPU threads (0: torch's default). Tiny GAN layers gain nothing from "
            "more, and oversubscribed cores make torch's thread pool spin: 1 is the fast default.",
        ),
    ] = 1,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue this interrupted federated run folder after its latest checkpoint "
            "(its scenario.yaml is the scenario).",
        ),
    ] = None,
) -> None:
    """Run a scenario (federated if it has a `federation` section) and write its run folder."""
    import torch
    from fedgan.simulator.centralized import run_centralized
    from fedgan.simulator.data import DataError
    from fedgan.simulator.engines.deployment import DeploymentError
    from fedgan.simulator.progress import Progress as RunProgress
    from fedgan.simulator.registry import RegistryError
    from fedgan.simulator.scenario import ScenarioError

    extend: list[str] = []
    if resume is not None:
        if scenario is not None and "=" in str(scenario):  # `--resume RUN federation.rounds=N`
            overrides, scenario = [str(scenario), *(overrides or [])], None
        if scenario is not None or centralized:
            _fail("--resume takes no scenario or --centralized: it continues the run")
        if not (resume / "scenario.yaml").is_file():
            _fail(f"--resume {resume}: not a run folder (no scenario.yaml)")
        from fedgan.simulator.store import run_is_finished

        extend, overrides = list(overrides or []), []
        if run_is_finished(resume) and not extend:
            console.print(f"{resume}: the run has finished; nothing to resume", soft_wrap=True)
            return
        scenario = resume / "scenario.yaml"
        if _load(scenario, extend).federation is None:
            _fail(
                f"--resume {resume}: only federated runs can be resumed (this one is centralized)"
            )
    if scenario is None:
        _fail("give a scenario file (or --resume RUN_DIR)")
        return
    s = _load(scenario, [*(overrides or []), *extend])
    if centralized:
        s = s.centralized_twin()
    _warn(s)
    if threads:
        torch.set_num_threads(threads)
    _preflight(s, scenario)
    if resume is None:  # checked once the scenario is known good: no folder before that
        _writable_folder(out, "--out")
    f = s.federation
    what = (
        f"federated on {s.engine.name}: {s.partition.n_clients} clients "
        f"({s.partition.name}), {f.rounds} rounds × {f.local_steps} local steps, "
        + _protocol_words(s)
        if f
        else f"centralized, {s.train.steps} generator steps"
    )
    console.print(
        f"[bold]{s.name}[/bold]: {what}; dataset {s.data.dataset}, objective "
        f"{s.gan.objective}, Lipschitz control {s.gan.lipschitz.name}" + _privacy_words(s)
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

        def on_progress(p: RunProgress) -> None:
            # Called from the thread that follows the run folder's progress file: the
            # ServerApp may run in another process (Ray, a SuperLink).
            if p.summary:
                sm = p.summary
                progress.update(
                    task,
                    description=(
                        f"{'round' if f else 'step'} {p.done}: "
                        f"recall {sm.get('recall', float('nan')):.3f}"
                        f" coverage {sm.get('coverage', float('nan')):.3f}"
                        f" worst group {sm.get('worst_group_coverage', float('nan')):.3f}"
                        f" modes {sm.get('modes_captured', float('nan')):.0f}"
                    ),
                )
            progress.update(task, completed=p.done)

        failed: Exception | None = None
        try:
            if f:
                from fedgan.simulator.engines.runner import resume_federated, run_federated

                if resume is not None:
                    result = resume_federated(resume, on_progress, extend)
                else:
                    result = run_federated(s, out, on_progress)
            else:
                result = run_centralized(s, out, on_progress)
        except Exception as exc:  # noqa: BLE001 - reported below, once the bar is gone
            failed = exc
            # The bar goes with the run: left in place, its last state ('starting 0/2') would
            # be drawn once more after the error message, when the display stops.
            progress.remove_task(task)
    if isinstance(failed, DataError | RegistryError | DeploymentError | ScenarioError):
        _fail(str(failed))
    if failed is not None:  # a run that died: say why, briefly; exit 1
        _crashed(failed, resume if resume is not None else out / s.name)
    from fedgan.simulator.store import load_run
    from fedgan.simulator.summary import summary_tables

    for table in summary_tables(
        result.metrics, scenario=load_run(result.path).scenario, width=console.width
    ):
        console.print(table)
    _feature_space_words(result.path)
    console.print(f"run folder: [bold]{result.path}[/bold]", soft_wrap=True)
    console.print(f"pictures:   fedgan report {result.path}", soft_wrap=True, highlight=False)


def _feature_space_words(run_dir: Path) -> None:
    """The space image metrics were computed in (env.json's `feature_space`), with a warning
    when its classifier tells the images apart badly: every image number rests on it."""
    import json

    try:
        space = json.loads((run_dir / "env.json").read_text()).get("feature_space")
    except (OSError, ValueError):
        return
    if not isinstance(space, dict):
        return
    from fedgan.simulator.metrics.features import MIN_ACCURACY, describe

    line = describe(space)
    if line:
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    acc = space.get("accuracy")
    if isinstance(acc, int | float) and acc < MIN_ACCURACY:
        err.print(
            f"[yellow]warning:[/yellow] the feature classifier's held-out accuracy is {acc:.3f},"
            f" below {MIN_ACCURACY:.2f}: image metrics read a space that does not tell the "
            "images apart well (evaluation.features can name a trained extractor)",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def validate(
    scenarios: Annotated[
        list[str], typer.Argument(help="Scenario YAML files, then optional key=value overrides.")
    ],
) -> None:
    """Check scenario files (with the same key=value overrides as `run`): every check `run`
    makes before training, every error with its YAML path; exit 2 on any."""
    from fedgan.simulator.engines.runner import check_scenario
    from fedgan.simulator.scenario import ScenarioError, load

    files = [Path(a) for a in scenarios if "=" not in a or Path(a).is_file()]
    overrides = [a for a in scenarios if "=" in a and not Path(a).is_file()]
    if not files:
        _fail("give at least one scenario file")
    bad = 0
    for p in files:
        try:
            s = load(p, overrides)
            problems = check_scenario(s)
            if problems:
                raise ScenarioError(str(p), problems)
            _warn(s)
            console.print(f"[green]ok[/green] {escape(str(p))}")
        except ScenarioError as exc:
            bad += 1
            # The messages quote user text ('[age]', '[30]'): never read it as rich markup.
            err.print("invalid ", style="red", end="")
            err.print(str(exc), markup=False, highlight=False)
    if bad:
        raise typer.Exit(code=2)


FRAMES = 20
"""Traceback frames `fedgan run` prints of a run that failed (all of them go to error.txt)."""


def _crashed(exc: BaseException, where: Path) -> None:
    """Print what killed a run — the exception and its last frames, without locals — point at
    the run folder's error.txt and exit 1 (2 stays "bad input")."""
    import traceback

    from fedgan.simulator.store import ERROR_FILE

    frames = traceback.format_tb(exc.__traceback__)[-FRAMES:]
    err.print("".join(frames), markup=False, highlight=False, end="")
    err.print("error: ", style="red", end="")
    err.print(f"the run failed: {type(exc).__name__}: {exc}", markup=False, highlight=False)
    # `where`: the resumed run folder, or the scenario's folder of runs (the newest is ours).
    found = [*where.glob(ERROR_FILE), *where.glob(f"*/{ERROR_FILE}")]
    runs = sorted(found, key=lambda p: p.stat().st_mtime)
    if runs:
        err.print(
            f"full traceback: {runs[-1]} (and a run_failed event in events.jsonl)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(code=1)


def _writable_folder(folder: Path, option: str) -> None:
    """Make `folder` (where run folders go), or exit 2 saying why it cannot be: a bad `--out`
    is bad input, not a run that failed."""
    import os

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"{option} {folder}: cannot create the folder: {exc.strerror or exc}")
    if not os.access(folder, os.W_OK | os.X_OK):
        _fail(f"{option} {folder}: cannot write in it (permission denied)")


def _preflight(s: Any, source: Path) -> None:
    """Every check a run makes before training (`check_scenario`), before any run folder
    exists: exit 2 with every problem on failure."""
    from fedgan.simulator.engines.runner import check_scenario
    from fedgan.simulator.scenario import ScenarioError

    problems = check_scenario(s)
    if problems:
        _fail(str(ScenarioError(str(source), problems)))


@app.command("scenarios")
def list_scenarios() -> None:
    """List the bundled scenarios."""
    from fedgan.simulator.scenario import ScenarioError, load

    files = sorted(BUNDLED.rglob("*.yaml"))
    shown = [_as_typed(p) for p in files]
    descriptions = []
    for p in files:
        try:
            descriptions.append(escape(load(p).description))
        except ScenarioError:
            descriptions.append("[red](invalid)[/red]")
    # Whole paths, never cut ('protocols/dirichlet-uagan-coverage.y…' cannot be pasted): the
    # file column is as wide as its longest path and the descriptions wrap beside it; where
    # the terminal is too narrow for both, each path has a line of its own.
    widest = max(map(len, shown), default=4)
    if console.width < widest + 24:
        console.print("bundled scenarios: fedgan run FILE", highlight=False)
        for text, desc in zip(shown, descriptions, strict=True):
            console.print(escape(text), highlight=False, soft_wrap=True)
            console.print(f"    {desc}", highlight=False)
        return
    t = Table(title="bundled scenarios: fedgan run FILE")
    t.add_column("file", no_wrap=True, min_width=widest)
    t.add_column("description", overflow="fold")
    for text, desc in zip(shown, descriptions, strict=True):
        t.add_row(escape(text), desc)
    console.print(t)


def _as_typed(path: Path) -> str:
    """`path` as one would type it here: relative to the current directory when it lies
    below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@app.command()
def inspect(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder, or a scenario's folder of runs (its latest).")
    ],
    round_: Annotated[
        int | None, typer.Option("--round", help="Round/step (default: last evaluated).")
    ] = None,
    by: Annotated[str, typer.Option(help="group | client | metric")] = "group",
) -> None:
    """Per-group, per-client or headline tables of one evaluation of a run."""
    from fedgan.simulator.layout import Column, fit_tables
    from fedgan.simulator.store import load_run
    from fedgan.simulator.summary import (
        client_tables,
        client_view_tables,
        evaluated_rounds,
        format_numbers,
        group_views,
        main_scope,
        view_tables,
    )

    run_dir = _run_folder(run_dir)
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
    word = "step" if scope == "centralized" else "round"
    if by == "client":
        sub = df[(df["scope"] == "client") & (df["group"] == "")]
        if sub.empty:
            _fail(f"{run_dir} has no per-client metrics (a centralized run?)")
        rounds = sorted(int(x) for x in sub["round"].unique())
        what = "has no client rows"
    else:
        rounds = evaluated_rounds(df, scope)
        what = "was not evaluated"
    if not rounds:
        _fail(f"{run_dir} has no evaluation yet")
    rnd = rounds[-1] if round_ is None else round_
    if rnd not in rounds:
        listed = ", ".join(map(str, rounds))
        _fail(f"{word} {rnd} {what}; {word}s with an evaluation: {listed}")
    width = console.width
    console.print(f"[bold]{escape(str(run_dir))}[/bold] {scope} {word} {rnd}", soft_wrap=True)
    from fedgan.simulator.summary import privacy_sentence

    private = privacy_sentence(df, rnd)
    if private:
        console.print(escape(private), soft_wrap=True)
    out: list[Any] = []
    if by == "group":
        views = group_views(df, scope, rnd, r.scenario)
        if not views:
            _fail(f"{run_dir} has no per-group metrics at {word} {rnd}")
        for view in views:
            out += view_tables(view, width)
        out += client_tables(df, rnd, views, width)
    elif by == "client":
        out += client_view_tables(df, rnd, r.scenario, width)
    else:
        sub = df[(df["scope"] == scope) & (df["round"] == rnd) & (df["group"] == "")]
        rows = sub.drop_duplicates(["group_by", "metric"])
        out += fit_tables(
            f"whole-population metrics at {word} {rnd}",
            [Column("metric", "left"), Column("grouping", "left"), Column("value")],
            [
                [escape(str(x.metric)), escape(str(x.group_by)), *format_numbers([x.value])]
                for x in rows.itertuples()
            ],
            width,
            keys=2,
        )
    for renderable in out:
        console.print(renderable)


def _run_folder(path: Path) -> Path:
    """The run folder `path` names: itself, or — for a scenario's folder of runs, the
    `runs/quickstart` that `compare` takes — its latest run, said on stderr. Anything else
    exits 2 saying what it is not."""
    if (path / "scenario.yaml").is_file():
        return path
    if not path.is_dir():
        _fail(f"{path}: no such folder")
    runs = [c for c in path.iterdir() if c.is_dir() and (c / "scenario.yaml").is_file()]
    if not runs:
        sweep = (path / "sweep.json").is_file()
        hint = " (a sweep folder: give one of its runs, or compare it)" if sweep else ""
        _fail(f"{path} is not a run folder (no scenario.yaml), nor a folder of runs{hint}")
    # Run folders are named <UTC stamp>-<random>: by name is by start, to the second; the
    # scenario file's time orders two runs started in the same second.
    latest = max(runs, key=lambda c: (c.name.split("-")[:2], (c / "scenario.yaml").stat().st_mtime))
    err.print(
        f"{path}: its latest run of {len(runs)}, {latest}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return latest


@app.command()
def sweep(
    scenario: Annotated[
        Path | None,
        typer.Argument(help="Base scenario YAML file (with --resume: the sweep's own)."),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(help="key=v1,v2 (values parsed as YAML scalars); repeat for more keys."),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="0-4 or 0,2,5 (default: the scenario's seed).")
    ] = None,
    jobs: Annotated[int, typer.Option(help="Runs in parallel (processes, 1 thread each).")] = 1,
    out: Annotated[Path, typer.Option(help="Where the sweep folder goes.")] = Path("runs"),
    name: Annotated[
        str | None, typer.Option(help="Sweep folder name (default: <scenario>-sweep-<stamp>).")
    ] = None,
    sweep_dir: Annotated[
        Path | None,
        typer.Option(help="Use this sweep folder; if it exists, finished runs are skipped."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Resume an existing sweep folder: rerun only unfinished runs."),
    ] = None,
) -> None:
    """Run every grid combination × seed, each in its own folder; resumable."""
    import torch
    from fedgan.simulator.scenario import ScenarioError
    from fedgan.simulator.sweep import SweepError, parse_grid, parse_seeds
    from fedgan.simulator.sweep import sweep as run_sweep

    if resume is not None and not (resume / "sweep.json").is_file():
        _fail(f"--resume {resume}: not a sweep folder (no sweep.json)")
    if resume is not None and sweep_dir is not None and resume != sweep_dir:
        _fail("give --resume or --sweep-dir, not both")
    if scenario is None and resume is not None:
        from fedgan.simulator.sweep import read_manifest

        scenario = Path(read_manifest(resume)["base"])  # the grid and seeds come from it too
    if scenario is None:
        _fail("give a base scenario file (or --resume SWEEP_DIR)")
        return
    try:
        grid_values = parse_grid(grid or [])
        seed_list = parse_seeds(seeds) if seeds else None
    except ValueError as exc:
        _fail(str(exc))
    torch.set_num_threads(1)  # the in-process runs (--jobs 1) too: see `run --threads`

    def on_done(e: dict[str, object]) -> None:
        mark = "[green]done[/green]" if e["status"] == "done" else "[red]failed[/red]"
        why = f": {e.get('error', '')}" if e["status"] == "failed" else ""
        console.print(f"{mark} {e['folder']}{why}", highlight=False, soft_wrap=True)

    try:
        result = run_sweep(
            scenario,
            grid_values,
            seed_list,
            out_dir=out,
            jobs=jobs,
            sweep_dir=resume or sweep_dir,
            name=name,
            on_done=on_done,
        )
    except ScenarioError as exc:
        _fail(str(exc))
    except SweepError as exc:
        _fail(f"no run started; {exc}")
    except OSError as exc:  # the sweep's own folder (a run's failure is recorded, not raised)
        _fail(f"cannot write the sweep folder: {exc}")
    skipped = len(result.entries) - len(result.ran)
    console.print(
        f"{len(result.ran)} run(s) this time, {skipped} already finished, "
        f"{len(result.failed)} failed"
    )
    _print_frame(
        result.summary,
        [
            *(k for k in grid_values),
            "seed",
            "status",
            "recall",
            "coverage",
            "coverage.group_min",
            "min_mass_ratio",
            "groups_forgotten",
            "worst_client_served",
            "modes_captured",
        ],
        "sweep summary (last evaluation of each run)",
    )
    console.print(f"sweep folder: [bold]{result.path}[/bold]", soft_wrap=True)
    if result.failed:
        raise typer.Exit(code=1)


def _print_frame(df, columns: list[str], title: str) -> None:  # type: ignore[no-untyped-def]
    """Print the chosen columns of a table (those it has): numbers to 3 decimals, counts (modes
    captured) as integers."""
    t = Table(title=title)
    cols = [c for c in columns if c in df.columns]
    for c in cols:
        t.add_column(c, justify="right")
    for _, row in df.iterrows():
        t.add_row(
            *(
                _mean_std(c, v, float("nan")) if isinstance(v, float) else str(v)
                for c, v in zip(cols, row[cols], strict=True)
            )
        )
    console.print(t)


@app.command()
def compare(
    paths: Annotated[list[Path], typer.Argument(help="Run folders and/or sweep folders.")],
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated headline metrics (default: fairness set).")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(help="Group by these dotted scenario keys only (comma-separated)."),
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Also save the table as CSV.")] = None,
    figure: Annotated[
        Path | None, typer.Option(help="Also draw the table (bars ± std per metric) as PNG.")
    ] = None,
) -> None:
    """Mean ± std over seeds of chosen metrics, one row per configuration."""
    from fedgan.simulator.compare import DEFAULT_METRICS, LABELS, CompareError
    from fedgan.simulator.compare import compare as compare_runs
    from fedgan.simulator.layout import Column, fit_tables

    asked = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    keys = [k.strip() for k in by.split(",") if k.strip()] if by else None
    try:
        df = compare_runs(paths, asked, keys)
    except (CompareError, FileNotFoundError) as exc:
        _fail(str(exc))
    chosen = [m for m in asked or DEFAULT_METRICS if f"{m}.mean" in df.columns]
    rows = []
    for _, row in df.iterrows():
        cells = [_mean_std(m, row[f"{m}.mean"], row[f"{m}.std"]) for m in chosen]
        rows.append([escape(str(row["config"])), str(row["n_runs"]), *cells])
    sizes = set(df["n_runs"])
    if sizes == {1}:  # one seed has no spread: no "± std over seeds" to speak of
        what = "one run each"
    elif len(sizes) == 1:
        what = f"mean ± std over {sizes.pop()} seeds"
    else:
        what = "mean ± std over each row's runs (one run: its value)"
    for renderable in fit_tables(
        f"{len(df)} configuration(s): {what} (last evaluation)",
        [
            Column("configuration", "left"),
            Column("runs"),
            *(Column(LABELS.get(m, m)) for m in chosen),
        ],
        rows,
        console.width,
    ):
        console.print(renderable)
    # Who each configuration forgets, from the one definition every view reads.
    for _, row in df.iterrows():
        console.print(f"{escape(str(row['config']))} forgets: {escape(str(row['forgotten']))}")
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(csv, index=False)
        console.print(f"saved {csv}")
    if figure is not None:
        from fedgan.simulator.compare import compare_figure

        figure.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"saved {compare_figure(df, figure)}")


def _mean_std(metric: str, mean: float, std: float) -> str:
    """A compare cell: counts (modes captured, groups kept) as integers where the mean is
    whole, to one decimal where seeds disagree; everything else to three decimals; no ± for
    a single run (its std is NaN)."""
    import math

    from fedgan.simulator.summary import format_value

    if math.isnan(mean):
        return "n/a"
    if format_value(metric, 1.0) == "1":  # the summary tables' own counts print as integers
        text = f"{mean:.0f}" if float(mean).is_integer() else f"{mean:.1f}"
        return text if math.isnan(std) else f"{text} ± {std:.1f}"
    return f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder, or a scenario's folder of runs (its latest).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Where to write (default RUN/report.html).")
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(
            help="A second run folder: its per-group recall and coverage drawn beside this "
            "run's (a federated run against its --centralized twin, two strategies, ...)."
        ),
    ] = None,
) -> None:
    """Write a self-contained HTML report of a run (figures embedded, no network)."""
    from fedgan.simulator.report import write_report

    run_dir = _run_folder(run_dir)
    if against is not None:
        against = _run_folder(against)
    path = write_report(run_dir, out, against)
    console.print(f"report: [bold]{path}[/bold]", soft_wrap=True)


@app.command()
def sample(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder, or a scenario's folder of runs (its latest).")
    ],
    n: Annotated[int, typer.Option("--n", help="How many samples.")] = 1000,
    out: Annotated[
        Path | None,
        typer.Option(help="The file: .csv for a table, .npz for images and arrays."),
    ] = None,
    round_: Annotated[
        int | None,
        typer.Option("--round", help="An evaluated round (default: the last)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Noise seed (default: the run's, which redraws its evaluation)."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(help="Samples of one group, from a conditional generator."),
    ] = None,
) -> None:
    """Write synthetic data from a run's generator in the data's own units (a CSV with the
    table's columns; images as uint8 in an .npz with a PNG grid beside it)."""
    from fedgan.simulator.sample import SampleError, draw, write

    run_dir = _run_folder(run_dir)
    try:
        samples = draw(run_dir, n, round_, seed, group)
        if out is None:
            suffix = "csv" if samples.kind == "table" else "npz"
            out = run_dir / f"synthetic-{samples.round}.{suffix}"
        files = write(samples, out)
    except SampleError as exc:
        _fail(str(exc))
    for f in files:
        console.print(f"wrote [bold]{f}[/bold]", soft_wrap=True)


@app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, help="SuperNodes to start.")] = 2,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="SuperLink port on 127.0.0.1 (0: any free).")
    ] = 9093,
    tls: Annotated[
        Path | None,
        typer.Option(help="Folder from `fedgan certs` (ca.crt, server.pem, server.key): TLS."),
    ] = None,
    auth: Annotated[
        bool, typer.Option("--auth", help="Node authentication with node-<i>.key/.pub (TLS).")
    ] = False,
    home: Annotated[
        Path | None, typer.Option(help="Flower state and logs (default: a temporary folder).")
    ] = None,
) -> None:
    """Start a SuperLink and N SuperNodes on 127.0.0.1 (partition-id i); Ctrl-C stops them."""
    import shutil
    import tempfile
    import time

    from fedgan.simulator.engines.local_cluster import CONNECTION, ClusterError, LocalCluster

    where = home if home is not None else Path(tempfile.mkdtemp(prefix="fedgan-up-"))
    try:
        if auth and tls is not None:
            lacking = [
                f"node-{i}.{e}"
                for i in range(nodes)
                for e in ("key", "pub")
                if not (tls / f"node-{i}.{e}").is_file()
            ]
            if lacking:
                _fail(
                    f"--auth: {tls} lacks {', '.join(lacking[:4])}: "
                    f"run `fedgan certs {tls} --nodes {nodes}`"
                )
        try:
            cluster = LocalCluster(nodes, where, port=port, tls=tls, auth=auth)
        except ValueError as exc:
            _fail(str(exc))
        with cluster.signals_stop():
            try:
                cluster.start()
                cert = (
                    f" engine.root_certificates={cluster.root_certificates}"
                    if cluster.root_certificates
                    else ""
                )
                console.print(
                    f"SuperLink on [bold]{cluster.address}[/bold]"
                    f" ({'TLS' if tls else 'insecure'}{', node auth' if auth else ''});"
                    f" {nodes} SuperNodes online (partition-id 0..{nodes - 1});"
                    f" logs in {where}/logs\n"
                    f"run against it:  fedgan run scenarios/deployment.yaml"
                    f" partition.n_clients={nodes} engine.address={cluster.address}{cert}\n"
                    + (
                        f"register another node: FLWR_HOME={where}/cli"
                        f" flwr supernode register NODE.pub {CONNECTION}\n"
                        if auth
                        else ""
                    )
                    + "Ctrl-C stops them all.",
                    soft_wrap=True,
                    highlight=False,
                )
                while True:
                    for name, proc in cluster.procs.items():
                        if proc.poll() is not None:
                            raise ClusterError(
                                f"{name} exited with {proc.returncode}; see {where}/logs/{name}.log"
                            )
                    time.sleep(1.0)
            except KeyboardInterrupt:
                console.print("stopping...")
            except ClusterError as exc:
                err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(code=1) from None
            finally:
                cluster.stop()
    finally:
        if home is None:
            shutil.rmtree(where, ignore_errors=True)


@app.command()
def certs(
    out: Annotated[Path, typer.Argument(help="Folder to write the certificates and keys to.")],
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=0, help="Node key pairs.")] = 2,
    days: Annotated[int, typer.Option(min=1, help="Validity in days.")] = 365,
) -> None:
    """Make a CA, a SuperLink certificate for 127.0.0.1/localhost and SuperNode key pairs."""
    from fedgan.simulator.engines.certs import make_certs

    for path in make_certs(out, nodes, days):
        console.print(str(path), highlight=False, soft_wrap=True)


@app.command()
def findings(
    quick: Annotated[
        bool, typer.Option(help="CI-sized runs (1 seed, few steps; < 2 minutes).")
    ] = False,
    only: Annotated[str | None, typer.Option(help="Items to run, e.g. 1,3 (default: all).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where findings.md and figures/ go (default docs; quick: "
            "runs/findings-quick, so the full document is not overwritten)."
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(help="Processes for the multi-run items (0, 4, 9, 10).")] = 2,
) -> None:
    """Measure the GAN-failure findings and write findings.md with its figures."""
    from fedgan.simulator.findings.suite import parse_only, write_findings

    try:
        items = parse_only(only)
    except ValueError as exc:
        _fail(str(exc))
    target = out or Path("runs/findings-quick" if quick else "docs")

    def done(f, seconds: float) -> None:  # type: ignore[no-untyped-def]
        tag = {"agrees": "agrees", "disagrees": "[yellow]disagrees[/yellow]"}.get(
            f.outcome, f"[cyan]{f.outcome}[/cyan]"
        )
        console.print(f"item {f.number}: {tag} ({seconds:.0f} s) — {f.title}", highlight=False)

    path, _ = write_findings(target, quick=quick, only=items, jobs=jobs, on_done=done)
    console.print(f"wrote [bold]{path}[/bold]", soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])


if __name__ == "__main__":  # python -m fedgan.simulator.cli
    main()
