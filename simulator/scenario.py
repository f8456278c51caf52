"""The scenario schema: one validated, typed description of a run, loaded from YAML.

Every default lives here. Unknown keys are rejected, and all errors are reported at once,
each with its YAML path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from fedgan.simulator.gan.kinds import CRITICS, GENERATORS, NetworkSpec
from fedgan.simulator.gan.lipschitz import LIPSCHITZ, get_control
from fedgan.simulator.gan.objectives import OBJECTIVES
from fedgan.simulator.gan.optim import OPTIMIZERS, OptimizerSpec
from fedgan.simulator.registry import RegistryError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

if TYPE_CHECKING:  # torch's: imported when a GAN is configured, not to validate a scenario
    from fedgan.simulator.gan.state import GANConfig
from fedgan.simulator.yamlsafe import MAX_DEPTH, MAX_NODES, YAMLError, load_yaml, read_text


class ScenarioError(ValueError):
    """A scenario that cannot be used; `errors` lists every problem as 'path: message'."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{source}: {len(errors)} error(s) in the scenario\n{lines}")

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[str, list[str]]]:
        return (ScenarioError, (self.source, self.errors))  # picklable across processes


class _Model(BaseModel):
    # NaN passes no bound check (every comparison is False) and ∞ passes every `gt`/`ge`: refuse
    # both in typed fields; free-form `params` are checked by their component.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _in_registry(value: str, registry: Any) -> str:
    """`value` if the registry knows it; a `module:attr` plug-in is imported and type-checked
    here, so a plug-in that does not import is refused at validation, not mid-run."""
    from fedgan.simulator.registry import RegistryError

    if value in registry:
        return value
    if ":" in value:
        try:
            registry.get(value)
        except RegistryError as exc:
            raise ValueError(str(exc)) from None
        return value
    raise ValueError(f"unknown {registry.kind} {value!r}; allowed: {registry.allowed()}")


DEFAULT_N_SAMPLES = 20000
"""Points of generated data when `data.n_samples` is left out (finite data: every row)."""


def _absolute_paths(params: dict[str, Any], dataset: str, base: Path) -> dict[str, Any]:
    """`params` with every relative file path of dataset `dataset` (`path_params`) made
    absolute against `base` (`~` expanded); `params` itself when there is none. A `stacked`
    dataset's `base_params` are its base dataset's parameters: their paths too."""
    from fedgan.simulator.data.registry import path_params

    out = params
    for key in path_params(dataset):
        v = params.get(key)
        if isinstance(v, str) and v:
            try:
                full = os.path.normpath(base / Path(v).expanduser())
            except (OSError, ValueError, RuntimeError):  # a NUL byte, no home: the check says so
                continue
            if full != v:
                out = {**out, key: full}
    inner, sub = out.get("base", "digits"), out.get("base_params")
    if dataset == "stacked" and isinstance(inner, str) and isinstance(sub, dict):
        resolved = _absolute_paths(sub, inner, base)
        if resolved is not sub:
            out = {**out, "base_params": resolved}
    return out


class DataSpec(_Model):
    """The dataset: a registered name (or `module:attr` plug-in) and its parameters."""

    dataset: str = "ring"
    n_samples: int | None = Field(default=DEFAULT_N_SAMPLES, ge=10, le=10_000_000)
    """Points drawn (generated data) or rows sampled (a table, the digits); None: every row.
    Left out: every row of finite data, DEFAULT_N_SAMPLES points of generated data."""
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    holdout: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share of the data held out (stratified by the first group column) for evaluation."""

    @model_validator(mode="before")
    @classmethod
    def _defaults_of_the_dataset(cls, data: Any) -> Any:
        """Every row of finite data unless `n_samples` says otherwise (a 2,000-row table is not
        refused for lacking 20,000 rows), and every file path absolute: one the scenario file
        gave was made absolute against that file when it was read (`_read`); what is still
        relative came from the command line or Python, and is taken from the current
        directory — so the run folder's scenario.yaml works from anywhere (`--resume`)."""
        from fedgan.simulator.data.registry import is_finite

        if not isinstance(data, dict):
            return data
        dataset = data.get("dataset", "ring")
        if not isinstance(dataset, str):
            return data
        if "n_samples" not in data and is_finite(dataset):
            data = {**data, "n_samples": None}
        params = data.get("params")
        if isinstance(params, dict):
            absolute = _absolute_paths(params, dataset, Path.cwd())
            if absolute is not params:
                data = {**data, "params": absolute}
        return data

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        from fedgan.simulator.data import DATASETS

        return _in_registry(v, DATASETS)

    @field_validator("params")
    @classmethod
    def _dry_run(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Build a tiny version of the dataset, so bad parameters fail before any training."""
        dataset = info.data.get("dataset")
        if dataset is None or _reported(info, "data.params"):  # the name was refused, or a
            return params  # later validation pass: its problems are already reported
        for key, cap in _SIZE_CAPS.get(dataset, {}).items():
            v = params.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > cap:
                # Checked before the dry run: even 64 points of a 10⁹-mode ring fill the memory.
                raise ValueError(
                    f"data.params.{key}: dataset {dataset!r}: {key} must be <= {cap:,}, got {v}"
                )
        problems, _ = _dry_build(dataset, json.dumps(params, sort_keys=True, default=str))
        if problems:
            raise ValueError("\n".join(problems))
        return params

    def _params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)

    def columns(self) -> list[str]:
        """The dataset's group columns (from the dry run; [] if it failed)."""
        return _dry_build(self.dataset, self._params_json())[1]


_SIZE_CAPS: dict[str, dict[str, int]] = {
    "ring": {"n_modes": 10_000},
    "grid": {"n_per_side": 100},  # n² modes
    "two_gaussians": {"dim": 100_000},
}
"""Bounds on the built-in datasets' size parameters, whose arrays grow with them whatever the
number of points."""

MAX_DRY_RUNS = 8
"""Dry runs of one dataset spec: after a parameter's problem, it is dropped and the dataset
built again, so that every bad parameter is reported at once (not one per `validate`)."""


def _required(dataset: str, key: str) -> bool:
    """Whether dataset `dataset` requires parameter `key` (it has no default)."""
    import inspect

    from fedgan.simulator.data import dataset_params

    try:
        return dataset_params(dataset).get(key, None) is inspect.Parameter.empty
    except Exception:  # noqa: BLE001 - an unreadable plug-in: keep looking at the others
        return False


@functools.lru_cache(maxsize=64)
def _dry_build(dataset: str, params_json: str) -> tuple[list[str], list[str]]:
    """(problems as 'data...: message' lines, the dataset's group columns) of a 64-point
    build of `dataset` with these parameters."""
    from fedgan.simulator.data import DataError, load_dataset
    from fedgan.simulator.data.registry import is_finite
    from fedgan.simulator.registry import RegistryError as _RegistryError

    params = json.loads(params_json)
    problems: list[str] = []
    finite = is_finite(dataset)
    for _ in range(MAX_DRY_RUNS):
        try:
            try:
                ds = load_dataset(dataset, 64, 0, params)
            except DataError:
                if not finite:
                    raise
                # A file of fewer than 64 rows or images is no mistake: build all of it (its
                # own error, if it has one, is the one to report).
                ds = load_dataset(dataset, None, 0, params)
        except DataError as exc:
            key = exc.key if exc.key in params else None
            if key is None:
                problems.append(f"data.params: {exc}")
                break
            problems.append(f"data.params.{key}: {exc}")
            if _required(dataset, key):  # without it the dataset cannot be built: said enough
                break
            params = {k: v for k, v in params.items() if k != key}
            continue
        except (_RegistryError, ValueError) as exc:  # ValueError: e.g. a size 64 points lack
            problems.append(f"data.params: {exc}")
            break
        except Exception as exc:  # noqa: BLE001 - a plug-in or a hostile parameter may raise
            problems.append(
                f"data.params: dataset {dataset!r} failed on a 64-point dry run: "
                f"{type(exc).__name__}: {exc}"
            )
            break
        return problems, [] if problems else [str(c) for c in ds.groups.columns]
    return problems, []


class NetworkModel(_Model):
    kind: str = "mlp"
    widths: list[int] = Field(default_factory=lambda: [128, 128, 128], min_length=1, max_length=64)
    activation: Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "silu"] = "relu"
    output: Literal["linear", "tanh"] = "linear"

    @field_validator("widths")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 or w > 65536 for w in v):
            raise ValueError(f"every width must lie in 1..65536, got {v}")
        return v

    def spec(self) -> NetworkSpec:
        return NetworkSpec(self.kind, tuple(self.widths), self.activation, self.output)


class OptimizerModel(_Model):
    name: str = "adam"
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    betas: tuple[float, float] = (0.5, 0.999)
    alpha: float = Field(default=0.99, ge=0.0, lt=1.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    eps: float = Field(default=1e-8, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; allowed: {', '.join(OPTIMIZERS)}")
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {list(v)}")
        return v

    def spec(self) -> OptimizerSpec:
        return OptimizerSpec(**self.model_dump())


class LipschitzModel(_Model):
    name: str = "r1"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _in_registry(v, LIPSCHITZ)

    @model_validator(mode="after")
    def _params(self) -> LipschitzModel:
        from fedgan.simulator.registry import signature

        try:
            sig = signature("lipschitz control", self.name, LIPSCHITZ.get(self.name))
        except RegistryError as exc:
            raise ValueError(str(exc)) from None
        wrong = sig.check(self.params).wrong
        if wrong:  # every parameter of the wrong type, each at its own path
            lines = [f"gan.lipschitz.params.{k}: {self.name}: {k} {m}" for k, m in wrong.items()]
            raise ValueError("\n".join(lines))
        try:
            get_control(self.name, self.params)
        except Exception as exc:  # noqa: BLE001 - a plug-in control raises what it likes
            said = isinstance(exc, RegistryError | ValueError | TypeError | ArithmeticError)
            raise ValueError(str(exc) if said else f"{type(exc).__name__}: {exc}") from None
        return self


class ConditionalModel(_Model):
    """`gan.conditional`: CTGAN's conditional vector with training-by-sampling
    (`simulator.gan.conditional`). `column`: a group column of the data (a mixture's `mode`,
    images' `label`, a table's categorical group column) or `all` (every group column, a column
    picked uniformly, then a category); `sampling`: how each batch draws its categories —
    `log_frequency` p ∝ log(1 + n_c) (CTGAN), `uniform`, `empirical` p ∝ n_c. Whether `column`
    is one of the data's group columns is checked against the data (the preflight)."""

    column: str = Field(min_length=1)
    sampling: Literal["log_frequency", "uniform", "empirical"] = "log_frequency"


class GANModel(_Model):
    """Networks, objective, Lipschitz control and optimizers of local GAN training."""

    latent_dim: int = Field(default=2, ge=1, le=4096)
    generator: NetworkModel = Field(default_factory=NetworkModel)
    critic: NetworkModel = Field(default_factory=NetworkModel)
    objective: str = "non_saturating"
    lipschitz: LipschitzModel = Field(default_factory=LipschitzModel)
    n_critic: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=128, ge=1, le=65536)
    g_opt: OptimizerModel = Field(default_factory=OptimizerModel)
    d_opt: OptimizerModel = Field(default_factory=OptimizerModel)
    lr_schedule: Literal["constant", "linear", "cosine"] = "linear"
    lr_final: float = Field(default=0.05, gt=0.0, le=1.0)
    ema: float = Field(default=0.0, ge=0.0, lt=1.0)
    conditional: ConditionalModel | None = None
    """Conditional training (None: off; the GAN and its runs exactly as without the key)."""

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> Any:
        """No `conditional` key when it is off: a scenario's JSON (its cache and sweep keys)
        stays what it was before the option existed."""
        out = handler(self)
        if isinstance(out, dict) and out.get("conditional", 0) is None:
            del out["conditional"]
        return out

    @field_validator("objective")
    @classmethod
    def _known(cls, v: str) -> str:
        return _in_registry(v, OBJECTIVES)

    @model_validator(mode="before")
    @classmethod
    def _conv_widths(cls, data: Any) -> Any:
        """A conv network without `widths` gets two channel widths (an MLP's three hidden
        widths would not build): the digits recipe's, 64→32 up (generator), 32→64 down; a
        `dcgan` network DCGAN's usual [64, 128] (channels from the image side, both nets)."""
        if not isinstance(data, dict):
            return data
        defaults = {"conv": {"generator": [64, 32], "critic": [32, 64]}}
        defaults["dcgan"] = {"generator": [64, 128], "critic": [64, 128]}
        for net in ("generator", "critic"):
            spec = data.get(net)
            if isinstance(spec, dict) and spec.get("kind") in defaults and "widths" not in spec:
                data = {**data, net: {**spec, "widths": defaults[spec["kind"]][net]}}
        return data

    @model_validator(mode="after")
    def _networks(self) -> GANModel:
        problems = []
        for net, reg in (("generator", GENERATORS), ("critic", CRITICS)):
            spec = getattr(self, net)
            try:
                if spec.kind not in reg:  # a built-in is known by name (imported to build it)
                    reg.get(spec.kind)  # a plug-in is imported here, not first in round 1
            except RegistryError as exc:
                problems.append(f"gan.{net}.kind: {exc}")
            if spec.kind == "conv" and len(spec.widths) != 2:
                problems.append(f"gan.{net}.widths: conv networks take exactly two channel widths")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def config(self, prox_mu: float = 0.0, ema: float | None = None) -> GANConfig:
        """The GAN's configuration; `ema` overrides `gan.ema` (federated clients whose generator
        travels keep none: the server averages the aggregated generators instead)."""
        from fedgan.simulator.gan.state import GANConfig

        return GANConfig(
            latent_dim=self.latent_dim,
            generator=self.generator.spec(),
            critic=self.critic.spec(),
            objective=self.objective,
            lipschitz=self.lipschitz.name,
            lipschitz_params=dict(self.lipschitz.params),
            n_critic=self.n_critic,
            batch_size=self.batch_size,
            g_opt=self.g_opt.spec(),
            d_opt=self.d_opt.spec(),
            lr_schedule=self.lr_schedule,
            lr_final=self.lr_final,
            ema=self.ema if ema is None else ema,
            prox_mu=prox_mu,
        )


# `gan.lr_schedule`'s values are simulator.gan.state.SCHEDULES (a test keeps them in step; the
# schema does not import that module, which needs torch).


MAX_STEPS = 10_000_000
"""Most generator steps of one run (centralized steps, or federated rounds × local steps)."""


class TrainModel(_Model):
    """Centralized training: the number of generator steps."""

    steps: int = Field(default=10000, ge=1, le=MAX_STEPS)


class EvaluationModel(_Model):
    """When and how the generator is evaluated."""

    every: int = Field(default=2000, ge=1)
    """Evaluate every `every` generator steps (centralized) or rounds (federated)."""
    n_samples: int = Field(default=2500, ge=10, le=1_000_000)
    k: int = Field(default=5, ge=1, le=100)
    group_by: list[str | list[str]] = Field(default_factory=list)
    """Groupings of the per-group tables (default: every group column of the dataset): a
    column, or a list of columns for intersectional groups (`[[sex, region]]`: one group per
    combination, labelled "F|north")."""
    mode_threshold: float = Field(default=3.0, gt=0.0)
    """Standardized distance under which a sample is high quality (3σ protocol)."""
    min_group_size: int = Field(default=20, ge=1)
    """Groups with fewer held-out real points than this are flagged as unreliable."""
    n_boot: int = Field(default=0, ge=0, le=10_000)
    """Bootstrap resamples for per-group confidence intervals (fairlearn; ~4 s per 50)."""
    minority_share: float = Field(default=0.05, gt=0.0, lt=1.0)
    """A group whose true share (mixture weight, else share of the held-out set) is at most
    this, and below an even share 1/G, is a minority: marked in every view."""
    metrics: list[str] = Field(default_factory=list)
    """Group metrics computed besides the two every evaluation runs (`prdc`, `mass`): names
    of `simulator.metrics.registry.METRICS` (e.g. `group_frechet`) or `module:fn` /
    `file.py:fn` plug-ins."""
    features: str | None = None
    """Image data: a TorchScript file (`torch.jit.save`) mapping images [B, C, H, W] in [−1, 1]
    to features [B, F] (an Inception or CLIP trunk), the space PRDC and the per-group metrics
    run in instead of the classifier trained on the training split (`metrics.features`)."""

    @field_validator("features")
    @classmethod
    def _torchscript_file(cls, v: str | None) -> str | None:
        """An absolute path (a relative one is taken from the current folder) to a file
        laid out as TorchScript saves it — a zip with `constants.pkl` — checked without
        torch; whether it loads and what it returns is checked when the run starts."""
        if v is None:
            return v
        import zipfile

        try:
            path = Path(os.path.normpath(Path.cwd() / Path(v).expanduser()))
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"cannot resolve {v!r}: {exc}") from None
        if not path.is_file():
            raise ValueError(f"no file at {str(path)!r} (a TorchScript module, .pt)")
        try:
            with zipfile.ZipFile(path) as z:
                script = any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in z.namelist())
        except (OSError, zipfile.BadZipFile):
            script = False
        if not script:
            raise ValueError(
                f"{str(path)!r} is not a TorchScript module: save one with "
                "torch.jit.save(torch.jit.script(model), path) (a state dict or a pickled "
                "model will not do)"
            )
        return str(path)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        if not v:
            return v
        from fedgan.simulator.metrics.registry import METRICS  # numpy, torch: only when asked

        problems = []
        for i, name in enumerate(v):
            try:
                METRICS.get(name)
            except RegistryError as exc:
                problems.append(f"item {i}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return v


class PartitionModel(_Model):
    """How training points are split over clients (see simulator.partition)."""

    name: str = "iid"
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    n_clients: int = Field(default=10, ge=1, le=100_000)
    group_by: str | None = None
    """Group column the partitioner splits by (default: the dataset's first group column)."""
    client_holdout: float = Field(default=0.2, ge=0.0, lt=1.0)
    """Share of each client's points kept aside for its per-client evaluation."""

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from fedgan.simulator.partition import PARTITIONERS

        return _in_registry(v, PARTITIONERS)

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """The partitioner's parameters against its signature (`partition.params.<key>`)."""
        from fedgan.simulator.partition import param_problems

        # As JSON sees them (mapping keys are strings: `assign: {0: [0]}` → {"0": [0]}), so
        # that a scenario equals itself after the round trip through scenario.yaml or the
        # run config; partitioners match group keys by str().
        try:
            params = json.loads(json.dumps(params))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"partition.params: not plain YAML values ({exc})") from None
        name = info.data.get("name")
        if name is None or _reported(info, "partition.params"):
            return params
        problems = param_problems(name, params)
        if problems:
            raise ValueError("\n".join(problems))
        return params


class FederationModel(_Model):
    """The protocol, rounds, local steps, client sampling and what is federated."""

    protocol: str = "fedavg"
    """What a round sends, expects back and combines (`server.protocols`): `fedavg` (local G
    and D steps on the clients, a Flower strategy aggregates), or a `module:Class` /
    `file.py:Class` plug-in. Checked, with its parameters, before a run."""
    protocol_params: dict[str, Any] = Field(default_factory=dict)
    """The protocol's parameters (its constructor's, checked against its signature)."""
    rounds: int = Field(default=20, ge=1, le=1_000_000)
    local_steps: int = Field(default=20, ge=1, le=1_000_000)
    local_epochs: float | None = Field(default=None, gt=0.0, le=10_000.0)
    """Instead of `local_steps`: each client runs ceil(local_epochs × its training points /
    gan.batch_size) generator steps a round, so clients with more data do more local work
    (heterogeneous local steps). The centralized twin keeps rounds × local_steps."""
    clients_per_round: int | None = Field(default=None, ge=1)
    """Clients sampled each round (seeded, over partition ids); default: all of them."""
    federate: Literal["both", "generator", "critic"] = "both"
    """Which networks travel; the other stays private on each client, optimizer state included."""
    proximal_mu: float = Field(default=0.0, ge=0.0)
    """FedProx μ applied on the client (also taken from a fedprox strategy's proximal_mu)."""
    min_replies: int = Field(default=1, ge=1)
    """A round with fewer valid replies is skipped (an event), never waited on forever."""
    timeout: float = Field(default=600.0, gt=0.0)
    """Bound, in seconds, on every wait for replies."""
    max_update_norm: float | None = Field(default=None, gt=0.0)
    """Gate: drop a reply whose ‖θ_k − θ_global‖₂ over the travelling arrays exceeds this."""
    max_reply_bytes: int | None = Field(default=None, ge=1)
    """Gate: drop a reply whose arrays take more bytes than this (checked before decoding)."""


class ClientFaultModel(_Model):
    """A fault that hits `clients` (default: every client) with `probability` each round."""

    clients: list[int] | None = None
    probability: float = Field(default=1.0, ge=0.0, le=1.0)

    @field_validator("clients")
    @classmethod
    def _ids(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(c < 0 for c in v):
            raise ValueError(f"client ids must be >= 0, got {v}")
        return v


class StragglerModel(ClientFaultModel):
    """A virtual delay ~ U(delay) seconds; replies later than `deadline` are discarded."""

    probability: float = Field(default=0.0, ge=0.0, le=1.0)
    delay: tuple[float, float] = (1.0, 5.0)
    deadline: float | None = Field(default=None, ge=0.0)
    """Virtual seconds the server waits (None: it waits for every straggler)."""

    @field_validator("delay")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] <= v[1]:
            raise ValueError(f"delay must be [low, high] with 0 <= low <= high, got {list(v)}")
        return v


class CorruptModel(ClientFaultModel):
    """The update θ_k − θ_global is multiplied by `scale` (a poisoned or broken client)."""

    scale: float = Field(default=1000.0, gt=0.0)


class OversizedModel(ClientFaultModel):
    """The reply carries an extra array of `extra_bytes` bytes."""

    extra_bytes: int = Field(default=10_000_000, ge=1, le=2**30)


class FaultsModel(_Model):
    """Simulated faults, drawn per (round, client) from the scenario seed (simulator.faults)."""

    # `raise` is a Python keyword: the field is `raise_`, the YAML key (and the dump) `raise`.
    model_config = ConfigDict(serialize_by_alias=True)

    dropout: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability a sampled client never gets the round's message (event client_dropped)."""
    straggler: StragglerModel | None = None
    raise_: ClientFaultModel | None = Field(default=None, alias="raise")
    diverge: ClientFaultModel | None = None
    corrupt: CorruptModel | None = None
    oversized: OversizedModel | None = None

    def client_faults(self) -> dict[str, ClientFaultModel]:
        """The configured faults that name clients, by YAML key."""
        specs = {
            "straggler": self.straggler,
            "raise": self.raise_,
            "diverge": self.diverge,
            "corrupt": self.corrupt,
            "oversized": self.oversized,
        }
        return {k: v for k, v in specs.items() if v is not None}


class StrategyModel(_Model):
    """A Flower strategy by name (fedavg, fedadam, ...) or `module:Class` / `file.py:Class`.

    With `critic` set, this strategy aggregates the generator and `critic` the critic.
    """

    name: str = "fedavg"
    params: dict[str, Any] = Field(default_factory=dict)
    critic: CriticStrategyModel | None = None


class CriticStrategyModel(_Model):
    """The critic's own strategy (see StrategyModel.critic)."""

    name: str = "fedavg"
    params: dict[str, Any] = Field(default_factory=dict)


class EngineModel(_Model):
    """Where the ServerApp and ClientApp run."""

    name: Literal["inprocess", "ray", "vectorized", "deployment"] = "inprocess"
    """inprocess: clients one by one in this process; ray: Flower's Ray simulation; vectorized:
    in this process, every sampled client's local training in lockstep as one batched
    computation (same metrics as inprocess up to float rounding); deployment: a Flower
    SuperLink and its SuperNodes (`fedgan up`)."""
    max_batch: int = Field(default=0, ge=0)
    """Vectorized: at most this many clients per batched computation (0: all sampled clients at
    once). Peak memory grows with the batch: a bound for wide networks or many clients."""
    private_memory_gb: float = Field(default=2.0, gt=0.0)
    """Vectorized: RAM for clients' private state (critics, optimizer moments); beyond it the
    state is kept in memory-mapped files in the run folder."""
    num_cpus: float = Field(default=1.0, gt=0.0)
    """Ray: CPUs per client."""
    num_gpus: float = Field(default=0.0, ge=0.0)
    """Ray: GPUs per client."""
    address: str | None = None
    """Ray: address of an existing cluster to join (default: start a local one).
    Deployment: host:port of the SuperLink (default 127.0.0.1:9093, `fedgan up`'s)."""
    root_certificates: str | None = None
    """Deployment: CA certificate (PEM) of a TLS SuperLink (`fedgan certs` writes ca.crt)."""
    run_timeout: float | None = Field(default=None, gt=0.0)
    """Deployment: stop the run and fail after this many seconds (default: wait)."""

    @model_validator(mode="after")
    def _deployment_only(self) -> EngineModel:
        if self.name != "deployment":
            for key in ("root_certificates", "run_timeout"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"engine.{key} is only for engine.name: deployment, not {self.name}"
                    )
        elif self.address is not None and not re.fullmatch(r"[^\s:/]+:\d{1,5}", self.address):
            raise ValueError(
                f"engine.address: expected host:port of the SuperLink, got {self.address!r}"
            )
        return self


class DiagnosticsModel(_Model):
    """When clients pay for their expensive per-round statistics: the Lipschitz estimates of
    their critic and the local evaluation of the generator they received (`local.*`)."""

    every: int | None = Field(default=None, ge=1)
    """Rounds between them (default: the evaluation rounds, `evaluation.every`, and the last).
    A strategy that reads the clients' local scores (the fairness rules, q-FedAvg, a plug-in)
    gets the local evaluation every round whatever this says. The cheap statistics (losses,
    gradient norms, D(x)) are written every round."""


class AdaptiveClipModel(_Model):
    """Adaptive clipping (Andrew et al. 2021): the clip C follows the `target_quantile` of the
    clients' update norms, C ← C·exp(−lr·(b̃ − target_quantile)), b̃ the share of updates with
    norm ≤ C released with Gaussian noise of std `count_noise`/(expected cohort) — a release
    accounted with the update's (the update's noise is raised so that the two together cost
    what `noise_multiplier` says)."""

    target_quantile: float = Field(default=0.5, gt=0.0, lt=1.0)
    lr: float = Field(default=0.2, gt=0.0, le=10.0)
    count_noise: float | None = Field(default=None, gt=0.0)
    """σ_b of the clipped count (default: expected cohort / 20, the paper's choice)."""


class PrivacyModel(_Model):
    """Differential privacy of a federated run (or a centralized DP-SGD run): what is
    protected, the noise, the clip and the accounting (`simulator.privacy`).

    `level: user` — DP-FedAvg (McMahan et al. 2018): each sampled client's update of all
    federated arrays clipped to `clip` as one vector, summed, Gaussian noise of std
    noise_multiplier·clip added, divided by the expected cohort; a client's whole data is the
    unit. `level: sample` — DP-SGD (Abadi et al. 2016) on every client's critic: each real
    sample's gradient clipped to `clip`, noise of std noise_multiplier·clip on the batch's sum;
    one training point is the unit, ε per client, the run's ε their maximum.
    """

    level: Literal["user", "sample"]
    noise_multiplier: float | None = Field(default=None, ge=0.0, le=1e6)
    """σ: the noise's standard deviation over `clip` (0: no noise, ε = ∞)."""
    clip: float = Field(gt=0.0)
    """C: the bound on one unit's contribution (an update's L2 norm; a sample's gradient's)."""
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    """δ of the (ε, δ) guarantee; must be < 1/N (N: clients at user level, a client's training
    points at sample level)."""
    target_epsilon: float | None = Field(default=None, gt=0.0)
    """Instead of `noise_multiplier`: σ calibrated before training so the run ends at or just
    below this ε."""
    sampling: Literal["poisson", "fixed"] = "poisson"
    """`poisson`: each unit joins a round (a batch) independently with q = cohort/N, the sum
    divided by the fixed expected cohort qN (add/remove neighbours); `fixed`: cohorts (batches)
    of exactly m without replacement, accounted under replace-one neighbours (sensitivity 2C)."""
    accountant: Literal["rdp", "pld"] = "rdp"
    """dp-accounting's Rényi DP or privacy-loss-distribution accountant."""
    adaptive: AdaptiveClipModel | None = None
    """User level: adapt `clip` (its initial value) to a quantile of the update norms."""

    @model_validator(mode="after")
    def _one_noise(self) -> PrivacyModel:
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ValueError(
                "privacy.target_epsilon: give noise_multiplier or target_epsilon, not both "
                "(target_epsilon calibrates noise_multiplier)"
            )
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError(
                "privacy.noise_multiplier: give noise_multiplier (σ) or target_epsilon"
            )
        if self.adaptive is not None and self.level != "user":
            raise ValueError("privacy.adaptive: adaptive clipping is for level: user")
        return self


class Scenario(_Model):
    """A whole run: data, GAN, training (centralized or federated), evaluation.

    A scenario with a `federation` section is federated; without one it is centralized.
    """

    name: str = Field(default="scenario", pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)
    """Also the run folder's name: short enough for any file system, and never `.` or `..`."""
    description: str = ""
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    data: DataSpec = Field(default_factory=DataSpec)
    gan: GANModel = Field(default_factory=GANModel)
    train: TrainModel = Field(default_factory=TrainModel)
    evaluation: EvaluationModel = Field(default_factory=EvaluationModel)
    partition: PartitionModel = Field(default_factory=PartitionModel)
    federation: FederationModel | None = None
    faults: FaultsModel | None = None
    """Simulated faults of a federated run (see simulator.faults)."""
    diagnostics: DiagnosticsModel = Field(default_factory=DiagnosticsModel)
    """Rounds at which clients compute their expensive statistics (see `DiagnosticsModel`)."""
    privacy: PrivacyModel | None = None
    """Differential privacy (user or sample level); see `PrivacyModel`."""
    strategy: StrategyModel = Field(default_factory=StrategyModel)
    engine: EngineModel = Field(default_factory=EngineModel)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where training and metrics run: auto = cuda when there is a GPU, else cpu. Results on cpu
    are bit-reproducible; on cuda, to float rounding."""

    @property
    def federated(self) -> bool:
        return self.federation is not None

    @field_validator("name")
    @classmethod
    def _not_dots(cls, v: str) -> str:
        if set(v) == {"."}:  # `..` as a folder name would write the run outside the output dir
            raise ValueError("a name made only of dots is not a folder name")
        return v

    @model_validator(mode="after")
    def _across_sections(self, info: ValidationInfo) -> Scenario:
        """Checks that tie sections together, every problem at once ('path: message' lines)."""
        problems = []
        f, n = self.federation, self.partition.n_clients
        if f is not None and f.rounds * f.local_steps > MAX_STEPS:
            # The matched centralized twin runs rounds × local_steps steps: keep it valid.
            problems.append(
                f"federation.rounds: rounds × local_steps ({f.rounds * f.local_steps}) "
                f"exceeds the {MAX_STEPS:,} generator steps allowed for a run"
            )
        if f is not None and f.clients_per_round and f.clients_per_round > n:
            problems.append(
                f"federation.clients_per_round: {f.clients_per_round} exceeds "
                f"partition.n_clients ({n})"
            )
        elif f is not None and f.min_replies > (f.clients_per_round or n):
            problems.append(
                f"federation.min_replies: {f.min_replies} exceeds the {f.clients_per_round or n} "
                "clients sampled per round"
            )
        if self.faults is not None:
            if f is None:
                problems.append("faults: simulated faults need a federation section")
            for key, spec in self.faults.client_faults().items():
                bad = [c for c in spec.clients or [] if c >= n]
                if bad:
                    problems.append(
                        f"faults.{key}.clients: ids must be < partition.n_clients ({n}), got {bad}"
                    )
        if self.privacy is not None:
            problems += _privacy_problems(self)
        # Not against a stand-in: after the data section failed, `validate` looks again with
        # the default dataset, whose columns are not the user's.
        stand_in = bool((info.context or {}).get("data_replaced"))
        columns = [] if stand_in else self.data.columns()
        if columns:  # [] when the dataset's own check failed (reported there)
            allowed = f"the dataset's group columns are {', '.join(columns)}"
            for i, grouping in enumerate(self.evaluation.group_by):
                if isinstance(grouping, str):
                    if grouping not in columns:
                        problems.append(
                            f"evaluation.group_by.{i}: no column {grouping!r}; {allowed}"
                        )
                    continue
                if not grouping:
                    problems.append(
                        f"evaluation.group_by.{i}: an intersectional grouping needs at least "
                        "one column"
                    )
                for j, col in enumerate(grouping):
                    if col not in columns:
                        problems.append(
                            f"evaluation.group_by.{i}.{j}: no column {col!r}; {allowed}"
                        )
            if self.partition.group_by is not None and self.partition.group_by not in columns:
                problems.append(
                    f"partition.group_by: no column {self.partition.group_by!r}; {allowed}"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def centralized_twin(self) -> Scenario:
        """The matched centralized run: same data and GAN, as many generator steps as the
        federated run's global model takes (rounds × local steps), no federation."""
        if self.federation is None:
            return self
        f = self.federation
        data = self.model_dump()
        data.update(federation=None, faults=None, name=f"{self.name}-centralized")
        if self.privacy is not None and self.privacy.level == "user":
            # User-level DP has no meaning without users: the twin is the non-private run (a
            # sample-level run's twin keeps DP-SGD, the centralized DP-SGD baseline).
            data["privacy"] = None
        data["train"] = {"steps": f.rounds * f.local_steps}
        data["evaluation"] = {**data["evaluation"], "every": self.evaluation.every * f.local_steps}
        return Scenario.model_validate(data)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


MIN_USERS = 100
"""User-level DP needs at least this many clients: over fewer, one client is a large share of
the population and (ε, δ) say little (δ < 1/N is then a weak bound)."""


def _privacy_problems(s: Scenario) -> list[str]:
    """What the `privacy:` section cannot be combined with, every problem with its path
    (the data-dependent ones — δ against a client's training points, the strategy and
    protocol — are the preflight's: `simulator.privacy.checks`)."""
    p, f, n = s.privacy, s.federation, s.partition.n_clients
    assert p is not None
    out: list[str] = []
    if p.level == "user":
        if f is None:
            out.append(
                "privacy.level: user-level DP protects a client's data; a centralized run has "
                "no clients (use level: sample for the DP-SGD twin)"
            )
        elif n < MIN_USERS:
            out.append(
                f"privacy.level: user-level DP needs at least {MIN_USERS} clients "
                f"(partition.n_clients is {n}): over fewer, one user is a large share of the "
                "population and (ε, δ) are meaningless; use level: sample"
            )
        if f is not None and p.delta >= 1.0 / n:
            out.append(
                f"privacy.delta: {p.delta:g} must be < 1/N = {1.0 / n:g} "
                f"(N = partition.n_clients = {n})"
            )
        if f is not None and f.max_update_norm is not None:
            out.append(
                "federation.max_update_norm: under privacy the clip bounds every update; a "
                "gate that drops large updates reads them un-noised (remove it)"
            )
    if s.faults is not None:
        out.append(
            "faults: simulated faults change the cohort the accountant assumes (dropouts, "
            "stragglers, failures); not allowed with privacy"
        )
    return out


def _format(err: Mapping[str, Any], model_fields: dict[tuple[str, ...], list[str]]) -> list[str]:
    """One pydantic error as 'path: message' lines (a section check may report several, each
    already naming its own path under the section's)."""
    loc = tuple(str(p) for p in err["loc"])
    path = ".".join(loc) or "(top)"
    if err["type"] == "extra_forbidden":
        allowed = model_fields.get(loc[:-1], [])
        return [f"{path}: unknown key; allowed here: {', '.join(allowed)}"]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "value_error" and isinstance(err.get("input"), dict):
        # A section's (or the whole scenario's) own check: its lines name their fields.
        lines = msg.split("\n")
        return [ln if _has_path(ln, loc) else f"{path}: {ln}" for ln in lines]
    got = repr(err.get("input"))
    return [f"{path}: {msg} (got {got if len(got) < 80 else got[:77] + '...'})"]


def _has_path(line: str, loc: tuple[str, ...]) -> bool:
    """Whether a check's message line starts with its own 'path:' under `loc`."""
    head = line.split(": ", 1)[0]
    prefix = ".".join(loc)
    return " " not in head and ": " in line and (not prefix or head.startswith(prefix))


def _fields_by_path() -> dict[tuple[str, ...], list[str]]:
    """Allowed keys at each nesting level of the schema, for 'unknown key' messages."""
    out: dict[tuple[str, ...], list[str]] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        # YAML keys are aliases where a field has one (`raise` → field `raise_`).
        out[prefix] = [f.alias or n for n, f in model.model_fields.items()]
        for name, field in model.model_fields.items():
            for ann in (field.annotation, *get_args(field.annotation)):  # X and X | None
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    walk(ann, prefix + (field.alias or name,))

    walk(Scenario, ())
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b.c=value' → (['a', 'b', 'c'], parsed YAML value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ScenarioError("override", [f"{item!r}: expected dotted.key=value"])
    try:
        value = load_yaml(raw, f"override {key.strip()}") if raw.strip() else None
    except YAMLError as exc:  # callers catch ScenarioError only
        raise ScenarioError("override", [str(exc)]) from None
    return key.strip().split("."), value


COMPONENT_KEYS = {"name": "params", "dataset": "params", "protocol": "protocol_params"}
"""A component's name key → its parameters' key: a component whose name changes — in a file
over its `base:`, or by an override — starts from empty parameters, since the old component's
would not fit the new one (`partition.name`, `strategy.name`, `gan.lipschitz.name`,
`data.dataset`, `federation.protocol`, a weighting's `name`)."""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each `dotted.key=value` set (intermediate mappings created).

    An override that changes a component's name (`partition.name=dirichlet`) empties its
    parameters first — the rule `base:` files follow — so that the parameters given beside
    it (`partition.params.alpha=0.3`, before or after it) are the only ones.
    """
    out = copy.deepcopy(raw)
    parsed = [parse_override(item) for item in overrides]
    for path, value in parsed:
        params_key = COMPONENT_KEYS.get(path[-1])
        node: Any = out
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        changed = isinstance(node, dict) and node.get(path[-1]) != value
        if params_key and changed and params_key in node:
            node[params_key] = {}
    for path, value in parsed:
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return out


def _shape_problem(raw: Any) -> str | None:
    """'path: message' if `raw` nests deeper or holds more nodes than a YAML file may.

    YAML input is capped by the loader; this covers mappings built in Python (API, sweeps,
    overrides), so that deep copies, pydantic and json never meet a structure that
    overflows the stack. Iterative, so it cannot overflow itself.
    """
    stack: list[tuple[Any, tuple[str, ...]]] = [(raw, ())]
    nodes = 0
    while stack:
        node, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"(top): more than {MAX_NODES} values; a scenario is small"
        if isinstance(node, dict | list | tuple | set | frozenset):
            if len(path) >= MAX_DEPTH:
                return f"{'.'.join(path[:8])}...: nested deeper than {MAX_DEPTH} levels"
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, (*path, str(k))) for k, v in items)
    return None


def validate(raw: Any, source: str = "<scenario>") -> Scenario:
    """Validate a parsed mapping; raises ScenarioError listing every problem."""
    if not isinstance(raw, dict):
        raise ScenarioError(source, [f"(top): expected a mapping, got {type(raw).__name__}"])
    problem = _shape_problem(raw)
    if problem:
        raise ScenarioError(source, [problem])
    errors: list[str] = []
    current = raw
    for _ in range(MAX_PASSES):
        reported = {e.split(": ", 1)[0] for e in errors}
        reported |= {p.rsplit(".", 1)[0] for p in reported}  # data.params.x → data.params
        replaced = _section(raw, "data") != _section(current, "data") or "data.params" in reported
        try:
            scenario = Scenario.model_validate(
                current, context={"data_replaced": replaced, "reported": reported}
            )
        except ValidationError as exc:
            fields = _fields_by_path()
            new = [m for e in exc.errors() for m in _format(e, fields) if m not in errors]
            errors += new
            # Checks across sections run only once every field is valid: drop the bad values
            # (their defaults stand in), skip the checks already reported, and look again, so
            # that every error comes at once.
            reduced = _without(current, [tuple(e["loc"]) for e in exc.errors()])
            if not new and reduced == current:
                break
            current = reduced
            continue
        except Exception as exc:  # noqa: BLE001 - a check raised instead of reporting: report
            errors.append(f"(top): a check of the scenario failed: {type(exc).__name__}: {exc}")
            break
        if not errors:
            return scenario
        break
    raise ScenarioError(source, errors)


def _reported(info: ValidationInfo, path: str) -> bool:
    """Whether an earlier validation pass already reported `path` (so its check is skipped
    and the checks across sections get to run on the rest)."""
    context = info.context or {}
    return path in context.get("reported", ())


def _section(raw: dict[str, Any], key: str) -> Any:
    return raw.get(key) if isinstance(raw, dict) else None


MAX_PASSES = 4
"""Validation passes of one scenario (each after dropping the values the last one refused)."""


def _without(raw: dict[str, Any], locs: list[tuple[Any, ...]]) -> dict[str, Any]:
    """A copy of `raw` without the values at `locs` (pydantic error locations): each bad value
    goes, and so does a section whose own check failed. Top-level checks (`()`) cannot be
    dropped."""
    out = copy.deepcopy(raw)
    for loc in locs:
        node: Any = out
        for part in loc[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if loc and isinstance(node, dict):
            node.pop(loc[-1], None)
    return out


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, mapping by mapping (lists and scalars in `top` replace).

    A component that changes its name (`COMPONENT_KEYS`: control, partitioner, strategy,
    dataset, protocol) starts from empty parameters: the old one's would not fit the new one.
    """
    out = copy.deepcopy(base)
    emptied = {
        params for key, params in COMPONENT_KEYS.items() if key in top and top[key] != base.get(key)
    }
    for k, v in top.items():
        merge = isinstance(v, dict) and isinstance(out.get(k), dict) and k not in emptied
        out[k] = _deep_merge(out[k], v) if merge else copy.deepcopy(v)
    for params in emptied:
        if params in out and params not in top:
            out[params] = {}
    return out


def _read(path: Path, chain: tuple[Path, ...] = ()) -> Any:
    """Parse a scenario file, resolving `base: other.yaml` (relative to this file) first."""
    try:
        raw = load_yaml(read_text(path), str(path))
    except YAMLError as exc:  # too large, not UTF-8, or not YAML: the message has line:column
        raise ScenarioError(str(path), [str(exc)]) from None
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(str(path), [f"cannot read the file: {reason}"]) from None
    raw = {} if raw is None else raw
    parent: Any = None
    if isinstance(raw, dict) and "base" in raw:
        base = raw.pop("base")
        if not isinstance(base, str):
            raise ScenarioError(str(path), [f"base: expected a file path, got {base!r}"])
        try:
            base_path = (path.parent / base).resolve()
        except (OSError, ValueError) as exc:  # a NUL byte, a symlink loop
            raise ScenarioError(str(path), [f"base: cannot resolve {base!r}: {exc}"]) from None
        if base_path in chain or base_path == path.resolve():
            raise ScenarioError(str(path), [f"base: {base} includes itself"])
        try:
            parent = _read(base_path, (*chain, path.resolve()))
        except ScenarioError as exc:  # report it as this file's `base:` problem, naming the file
            errors = [e if e.startswith(exc.source) else f"{exc.source}: {e}" for e in exc.errors]
            raise ScenarioError(str(path), [f"base: {e}" for e in errors]) from None
    if isinstance(raw, dict):
        raw = _paths_from(raw, parent, path)
    if isinstance(raw, dict) and isinstance(parent, dict):
        parent.pop("description", None)  # a description describes one file only
        raw = _deep_merge(parent, raw)
    return raw


def _paths_from(raw: dict[str, Any], parent: Any, path: Path) -> dict[str, Any]:
    """`raw` (one file's own mapping) with the file paths it gives — the data's, and
    `evaluation.features` — made absolute against its own folder, as `base:` is: the dataset
    is this file's, else its base chain's."""
    try:
        folder = path.parent.resolve()
    except (OSError, ValueError, RuntimeError):
        return raw
    ev = raw.get("evaluation")
    feats = ev.get("features") if isinstance(ev, dict) else None
    if isinstance(ev, dict) and isinstance(feats, str) and feats:
        try:
            full = os.path.normpath(folder / Path(feats).expanduser())
        except (OSError, ValueError, RuntimeError):  # a NUL byte, no home: the check says so
            full = feats
        raw = {**raw, "evaluation": {**ev, "features": full}}
    data = raw.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        return raw
    dataset = data.get("dataset")
    if dataset is None and isinstance(parent, dict) and isinstance(parent.get("data"), dict):
        dataset = parent["data"].get("dataset")
    if not isinstance(dataset, str):
        dataset = "ring"
    params = _absolute_paths(data["params"], dataset, folder)
    return raw if params is data["params"] else {**raw, "data": {**data, "params": params}}


def load(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read a scenario file (with its `base:` chain), apply overrides, validate."""
    path = Path(path)
    raw = _read(path)
    if isinstance(raw, dict) and overrides:
        raw = apply_overrides(raw, overrides)
    return validate(raw, str(path))


def resolved_yaml(s: Scenario) -> str:
    """The scenario with every default filled in, as YAML."""
    import yaml

    return yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False)
