"""The scenario schema: one validated, typed description of a run, loaded from YAML.

Every default lives here. Unknown keys are rejected, and all errors are reported at once,
each with its YAML path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simulator.gan.lipschitz import LIPSCHITZ, get_control
from simulator.gan.networks import CRITICS, GENERATORS, NetworkSpec
from simulator.gan.objectives import OBJECTIVES
from simulator.gan.optim import OPTIMIZERS, OptimizerSpec
from simulator.gan.train import SCHEDULES, GANConfig
from simulator.registry import RegistryError
from simulator.yamlsafe import YAMLError, load_yaml


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
    model_config = ConfigDict(extra="forbid", frozen=True)


def _in_registry(value: str, registry: Any) -> str:
    if value in registry or ":" in value:
        return value
    raise ValueError(f"unknown {registry.kind} {value!r}; allowed: {registry.allowed()}")


class DataSpec(_Model):
    """The dataset: a registered name (or `module:attr` plug-in) and its parameters."""

    dataset: str = "ring"
    n_samples: int | None = Field(default=20000, ge=10, le=10_000_000)
    params: dict[str, Any] = Field(default_factory=dict)
    holdout: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share of the data held out (stratified by the first group column) for evaluation."""

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        from simulator.data import DATASETS

        return _in_registry(v, DATASETS)

    @model_validator(mode="after")
    def _dry_run(self) -> DataSpec:
        """Build a tiny version of the dataset, so bad parameters fail before any training."""
        problem = _dry_build(self.dataset, json.dumps(self.params, sort_keys=True, default=str))
        if problem:
            raise ValueError(problem)
        return self


@functools.lru_cache(maxsize=64)
def _dry_build(dataset: str, params_json: str) -> str | None:
    from simulator.data import DataError, load_dataset
    from simulator.registry import RegistryError as _RegistryError

    try:
        load_dataset(dataset, 64, 0, json.loads(params_json))
    except (DataError, _RegistryError) as exc:
        return str(exc)
    except ValueError as exc:  # e.g. a requested size the dataset cannot provide at 64 points
        return str(exc)
    return None


class NetworkModel(_Model):
    kind: str = "mlp"
    widths: list[int] = Field(default_factory=lambda: [128, 128, 128], min_length=1)
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
    lr: float = Field(default=2e-4, gt=0.0, le=10.0)
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
    name: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _in_registry(v, LIPSCHITZ)

    @model_validator(mode="after")
    def _params(self) -> LipschitzModel:
        try:
            get_control(self.name, self.params)
        except (RegistryError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        return self


class GANModel(_Model):
    """Networks, objective, Lipschitz control and optimizers of local GAN training."""

    latent_dim: int = Field(default=2, ge=1, le=4096)
    generator: NetworkModel = Field(default_factory=NetworkModel)
    critic: NetworkModel = Field(default_factory=NetworkModel)
    objective: str = "non_saturating"
    lipschitz: LipschitzModel = Field(default_factory=LipschitzModel)
    n_critic: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=256, ge=1, le=65536)
    g_opt: OptimizerModel = Field(default_factory=OptimizerModel)
    d_opt: OptimizerModel = Field(default_factory=OptimizerModel)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    lr_final: float = Field(default=0.1, gt=0.0, le=1.0)
    ema: float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("objective")
    @classmethod
    def _known(cls, v: str) -> str:
        return _in_registry(v, OBJECTIVES)

    @model_validator(mode="after")
    def _networks(self) -> GANModel:
        problems = []
        for net, reg in (("generator", GENERATORS), ("critic", CRITICS)):
            spec = getattr(self, net)
            if spec.kind not in reg and ":" not in spec.kind:
                problems.append(
                    f"{net}.kind: unknown {reg.kind} {spec.kind!r}; allowed: {reg.allowed()}"
                )
            if spec.kind == "conv" and len(spec.widths) != 2:
                problems.append(f"{net}.widths: conv networks take exactly two channel widths")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def config(self, prox_mu: float = 0.0) -> GANConfig:
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
            ema=self.ema,
            prox_mu=prox_mu,
        )


assert set(SCHEDULES) == {"constant", "linear", "cosine"}  # kept in step with GANConfig


class TrainModel(_Model):
    """Centralized training: the number of generator steps."""

    steps: int = Field(default=10000, ge=1, le=10_000_000)


class EvaluationModel(_Model):
    """When and how the generator is evaluated."""

    every: int = Field(default=2000, ge=1)
    """Evaluate every `every` generator steps (centralized) or rounds (federated)."""
    n_samples: int = Field(default=2500, ge=10, le=1_000_000)
    k: int = Field(default=5, ge=1, le=100)
    group_by: list[str] = Field(default_factory=list)
    """Group columns of the per-group tables (default: every group column of the dataset)."""
    mode_threshold: float = Field(default=3.0, gt=0.0)
    """Standardized distance under which a sample is high quality (3σ protocol)."""
    min_group_size: int = Field(default=20, ge=1)
    """Groups with fewer held-out real points than this are flagged as unreliable."""
    n_boot: int = Field(default=0, ge=0, le=10_000)
    """Bootstrap resamples for per-group confidence intervals (fairlearn; ~4 s per 50)."""


class PartitionModel(_Model):
    """How training points are split over clients (see simulator.partition)."""

    name: str = "iid"
    params: dict[str, Any] = Field(default_factory=dict)
    n_clients: int = Field(default=10, ge=1, le=100_000)
    group_by: str | None = None
    """Group column the partitioner splits by (default: the dataset's first group column)."""
    client_holdout: float = Field(default=0.2, ge=0.0, lt=1.0)
    """Share of each client's points kept aside for its per-client evaluation."""

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from simulator.partition import PARTITIONERS

        return _in_registry(v, PARTITIONERS)


class FederationModel(_Model):
    """Rounds, local steps, client sampling and what is federated."""

    rounds: int = Field(default=20, ge=1, le=1_000_000)
    local_steps: int = Field(default=20, ge=1, le=1_000_000)
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

    name: Literal["inprocess", "ray"] = "inprocess"
    num_cpus: float = Field(default=1.0, gt=0.0)
    """Ray: CPUs per client."""
    num_gpus: float = Field(default=0.0, ge=0.0)
    """Ray: GPUs per client."""
    address: str | None = None
    """Ray: address of an existing cluster to join (default: start a local one)."""


class Scenario(_Model):
    """A whole run: data, GAN, training (centralized or federated), evaluation.

    A scenario with a `federation` section is federated; without one it is centralized.
    """

    name: str = Field(default="scenario", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    data: DataSpec = Field(default_factory=DataSpec)
    gan: GANModel = Field(default_factory=GANModel)
    train: TrainModel = Field(default_factory=TrainModel)
    evaluation: EvaluationModel = Field(default_factory=EvaluationModel)
    partition: PartitionModel = Field(default_factory=PartitionModel)
    federation: FederationModel | None = None
    strategy: StrategyModel = Field(default_factory=StrategyModel)
    engine: EngineModel = Field(default_factory=EngineModel)

    @property
    def federated(self) -> bool:
        return self.federation is not None

    @model_validator(mode="after")
    def _sampling(self) -> Scenario:
        f = self.federation
        if f is not None and f.clients_per_round and f.clients_per_round > self.partition.n_clients:
            raise ValueError(
                f"federation.clients_per_round ({f.clients_per_round}) exceeds "
                f"partition.n_clients ({self.partition.n_clients})"
            )
        if f is not None and f.min_replies > (f.clients_per_round or self.partition.n_clients):
            raise ValueError("federation.min_replies exceeds the clients sampled per round")
        return self

    def centralized_twin(self) -> Scenario:
        """The matched centralized run: same data and GAN, as many generator steps as the
        federated run's global model takes (rounds × local steps), no federation."""
        if self.federation is None:
            return self
        f = self.federation
        data = self.model_dump()
        data.update(federation=None, name=f"{self.name}-centralized")
        data["train"] = {"steps": f.rounds * f.local_steps}
        data["evaluation"] = {**data["evaluation"], "every": self.evaluation.every * f.local_steps}
        return Scenario.model_validate(data)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def _format(err: Mapping[str, Any], model_fields: dict[tuple[str, ...], list[str]]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    path = ".".join(loc) or "(top)"
    if err["type"] == "extra_forbidden":
        allowed = model_fields.get(loc[:-1], [])
        return f"{path}: unknown key; allowed here: {', '.join(allowed)}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "value_error" and isinstance(err.get("input"), dict):
        return f"{path}: {msg}"  # a whole-section check: the message names the field
    got = repr(err.get("input"))
    return f"{path}: {msg} (got {got if len(got) < 80 else got[:77] + '...'})"


def _fields_by_path() -> dict[tuple[str, ...], list[str]]:
    """Allowed keys at each nesting level of the schema, for 'unknown key' messages."""
    out: dict[tuple[str, ...], list[str]] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        out[prefix] = list(model.model_fields)
        for name, field in model.model_fields.items():
            for ann in (field.annotation, *get_args(field.annotation)):  # X and X | None
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    walk(ann, prefix + (name,))

    walk(Scenario, ())
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b.c=value' → (['a', 'b', 'c'], parsed YAML value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ScenarioError("override", [f"{item!r}: expected dotted.key=value"])
    return key.strip().split("."), load_yaml(raw, f"override {key}") if raw.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each `dotted.key=value` set (intermediate mappings created)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return out


def validate(raw: Any, source: str = "<scenario>") -> Scenario:
    """Validate a parsed mapping; raises ScenarioError listing every problem."""
    if not isinstance(raw, dict):
        raise ScenarioError(source, [f"(top): expected a mapping, got {type(raw).__name__}"])
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        fields = _fields_by_path()
        raise ScenarioError(source, [_format(e, fields) for e in exc.errors()]) from None
    return scenario


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, mapping by mapping (lists and scalars in `top` replace).

    A component that changes its `name` (objective, control, partitioner, strategy) starts
    from empty `params`: the old component's parameters would not fit the new one.
    """
    out = copy.deepcopy(base)
    renamed = "name" in top and top["name"] != base.get("name")
    for k, v in top.items():
        merge = isinstance(v, dict) and isinstance(out.get(k), dict)
        if k == "params" and renamed:
            merge = False
        out[k] = _deep_merge(out[k], v) if merge else copy.deepcopy(v)
    if renamed and "params" in out and "params" not in top:
        out["params"] = {}
    return out


def _read(path: Path, chain: tuple[Path, ...] = ()) -> Any:
    """Parse a scenario file, resolving `base: other.yaml` (relative to this file) first."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        raw = load_yaml(text, str(path))
    except YAMLError as exc:
        raise ScenarioError(str(path), [str(exc)]) from None
    raw = {} if raw is None else raw
    if isinstance(raw, dict) and "base" in raw:
        base = raw.pop("base")
        if not isinstance(base, str):
            raise ScenarioError(str(path), [f"base: expected a file path, got {base!r}"])
        base_path = (path.parent / base).resolve()
        if base_path in chain or base_path == path.resolve():
            raise ScenarioError(str(path), [f"base: {base} includes itself"])
        parent = _read(base_path, (*chain, path.resolve()))
        if isinstance(parent, dict):
            parent.pop("description", None)  # a description describes one file only
            raw = _deep_merge(parent, raw)
    return raw


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
