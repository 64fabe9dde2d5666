"""The sweep file's schema: the axes (tasks x methods x mix ratios x seeds), the trial settings
(``ssmix.config.TrialSettings``: any trial setting, each alone), and where and how it runs.

Loading validates everything at once, names every bad key, and imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ssmix.config import Seed, TrialSettings, default
from ssmix.methods import METHODS
from ssmix.sweep.search import SearchConfig, with_overrides
from ssmix.tasks import TASKS, TaskSpec


class SweepError(ValueError):
    """A sweep file that cannot run; the message lists every problem found."""


def default_tracking_uri() -> str:
    """Where runs go when neither the sweep file nor a flag names a tracking URI."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def shown_uri(uri: str) -> str:
    """A URI as it may be printed or stored: a password in it (postgresql://user:PASSWORD@host,
    http://user:PASSWORD@host) replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.password:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


class TaskResources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float | None = Field(default=None, gt=0, description="CPUs per trial of this task (none: resources.cpu)")
    gpu: float | None = Field(default=None, ge=0, description="GPUs per trial of this task (none: resources.gpu)")


class Resources(BaseModel):
    """What each trial asks Ray for. ``gpu`` may be a fraction (0.5: two trials share a card; Ray
    counts, it does not cap memory). ``per_task`` overrides it for some tasks (a whole GPU for
    MNLI, half for RTE). A trial given a GPU trains on it; where torch has no CUDA it fails at once,
    unless ``cpu_fallback`` (tests, laptops)."""

    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(default=1, gt=0, description="CPUs per trial (also its torch threads)")
    gpu: float = Field(default=0, ge=0, description="GPUs per trial; a fraction shares a card (0.5: two trials)")
    per_task: dict[str, TaskResources] = Field(default_factory=dict, description="overrides for some tasks "
                                               "(a whole GPU for MNLI, half for RTE)")
    cpu_fallback: bool = Field(default=False, description="a trial given a GPU where torch has no CUDA trains "
                               "on CPU instead of failing (tests, laptops)")

    def for_task(self, task: str) -> dict[str, float]:
        override = self.per_task.get(task) or TaskResources()
        return {"CPU": override.cpu if override.cpu is not None else self.cpu,
                "GPU": override.gpu if override.gpu is not None else self.gpu}


class MixRatioSpace(BaseModel):
    """A search space over λ0: ``samples`` values drawn once, with ``seed``, from
    ``distribution`` on [low, high]. They become ordinary cells (content-addressed like any
    other), so a rerun draws the same values and trains nothing twice."""

    model_config = ConfigDict(extra="forbid")
    distribution: Literal["uniform", "loguniform"] = Field(default="uniform", description="how λ0 is drawn")
    low: float = Field(gt=0, le=1, description="smallest λ0")
    high: float = Field(gt=0, le=1, description="largest λ0")
    samples: int = Field(ge=1, le=1000, description="how many values (repeats after rounding to 4 digits count once)")
    seed: Seed = Field(default=0, description="seeds the draws: the same seed, the same cells")

    def values(self) -> list[float]:
        import numpy as np

        if self.high < self.low:
            raise ValueError(f"mix_ratios: high {self.high} is below low {self.low}")
        rng = np.random.default_rng(self.seed)
        if self.distribution == "uniform":
            drawn = rng.uniform(self.low, self.high, self.samples)
        else:
            drawn = np.exp(rng.uniform(np.log(self.low), np.log(self.high), self.samples))
        return sorted({round(float(v), 4) for v in drawn})


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["asha"] = Field(default="asha", description="the scheduler (Ray Tune's ASHA)")
    grace_period: int = Field(default=1, ge=1, description="evaluations a phase-2 trial gets before it may be stopped")
    reduction_factor: int = Field(default=2, ge=2, description="keep the best 1/reduction_factor at each rung")


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the sweep's name: its MLflow "
                      "experiment and its folder on storage")
    description: str | None = Field(default=None, description="what the sweep is for: shown as the MLflow "
                                    "experiment's description")
    model: str = Field(default=default("model"), description="HF model name or path; 'minilm' = the offline "
                       "all-MiniLM-L6-v2, bert-base-uncased = the paper's")
    custom_tasks: list[TaskSpec] = Field(default_factory=list, description="your own CSV/JSONL tasks, "
                                         "usable by name in `tasks` (validated first, so they are known there)")
    tasks: list[str] = Field(min_length=1, description="tasks of `ssmix tasks`, or names of custom_tasks")
    methods: list[str] = Field(min_length=1, description="methods of the paper's Table 2 (none, embedmix, tmix, "
                               "ssmix, ssmix-nosal, ssmix-nosal-nospan, unk); none is phase 1's result")
    mix_ratios: list[float] | MixRatioSpace = Field(default_factory=lambda: [default("mix_ratio")],
                                                    description="a list of λ0, or a search space")
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1, description="one phase 1 "
                              "per (task, seed), shared by every method's phase 2")
    phase2_control: bool = Field(default=False, description="also train a `none` phase-2 arm (5 more epochs, no mixup)")
    trial: TrialSettings = Field(default_factory=TrialSettings, description="trial settings for every cell")
    resources: Resources = Field(default_factory=Resources, description="what each trial asks Ray for")
    data_dir: str | None = Field(default=None, description="local data <dir>/<dataset>/<split>.jsonl (relative: "
                                 "to the working directory); none = $SSMIX_DATA_DIR, else the hub")
    storage_path: str | None = Field(default=None, description="where cells keep results and weights (default: "
                                     "$SSMIX_STORAGE_PATH, else ./ray_results): a directory (on a cluster, one "
                                     "every node mounts at the same absolute path) or an object store "
                                     "(s3://bucket/prefix; gs://, az://, file:// alike)")
    keep_best_model: bool = Field(default=False, description="keep each phase-2 cell's best weights (model "
                                  "only); phase-1 weights are kept while a phase-2 cell may need them")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI (default: "
                                     "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db); on a cluster a server")
    tracking_retry_seconds: float = Field(default=300, ge=0, description="how long the end of a sweep keeps "
                                          "retrying an unreachable tracking server before giving up")
    max_failures: int = Field(default=2, ge=0, description="retries of a failed trial (from its last checkpoint)")
    max_concurrent_trials: int | None = Field(default=None, ge=1, description="trials at once (none: as many "
                                              "as the cluster's resources allow)")
    scheduler: SchedulerConfig | None = Field(default=None, description="early stopping of phase-2 cells")
    search: SearchConfig | None = Field(default=None, description="search any trial setting (grid, random, "
                                        "tpe) per task and method instead of the seeds x mix ratios grid")

    @field_validator("tasks", "methods")
    @classmethod
    def _known_names(cls, value, info):
        custom = [t.name for t in info.data.get("custom_tasks", [])] if info.field_name == "tasks" else []
        allowed = list(TASKS) + custom if info.field_name == "tasks" else list(METHODS)
        unknown = [name for name in value if name not in allowed]
        if unknown:
            raise ValueError(f"unknown {info.field_name[:-1]}(s) {unknown}; allowed: {', '.join(allowed)}")
        return value

    @field_validator("mix_ratios")
    @classmethod
    def _ratios(cls, value):
        if isinstance(value, MixRatioSpace):
            value.values()   # checks low <= high
            return value
        if not value:
            raise ValueError("at least one mix ratio is needed")
        bad = [r for r in value if not 0 < r <= 1]
        if bad:
            raise ValueError(f"mix ratio(s) {bad} outside (0, 1]")
        return value

    @model_validator(mode="after")
    def _per_task_resources_name_tasks(self):
        unknown = [task for task in self.resources.per_task if task not in self.tasks]
        if unknown:
            raise ValueError(f"resources.per_task names task(s) {unknown} that are not in tasks {self.tasks}")
        return self

    @model_validator(mode="after")
    def _search_fits_the_trial(self):
        if self.search is None:
            return self
        given = [key for key in ("seeds", "mix_ratios") if key in self.model_fields_set]
        if given:
            raise ValueError(f"with `search`, leave out {' and '.join(given)}: search trials train on "
                             f"search.trial_seed, the best configuration on search.confirm_seeds, and a "
                             f"mix ratio is searched as search.space.mix_ratio")
        base = self.trial.model_dump()
        for key, dimension in self.search.space.items():
            for value in dimension.extremes():
                try:
                    TrialSettings(**with_overrides(base, {key: value}))
                except ValidationError as err:
                    if key != "mix_ratio":
                        raise ValueError(f"search.space.{key}: value {value!r}: "
                                         f"{err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
                if key == "mix_ratio" and not 0 < float(value) <= 1:
                    raise ValueError(f"search.space.mix_ratio: value {value!r} outside (0, 1]")
        return self

    @property
    def mix_ratio_values(self) -> list[float]:
        return self.mix_ratios.values() if isinstance(self.mix_ratios, MixRatioSpace) else list(self.mix_ratios)

    def task_spec(self, name: str) -> TaskSpec | str:
        """A custom task's spec (it travels inside each trial's config), or a built-in's name."""
        return next((t for t in self.custom_tasks if t.name == name), name)

    @property
    def tracking(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    @property
    def storage(self) -> str:
        """The sweep file's storage_path, else $SSMIX_STORAGE_PATH (a cluster's nodes set it), else
        ./ray_results: the same precedence as the tracking URI."""
        return self.storage_path or os.environ.get("SSMIX_STORAGE_PATH") or "./ray_results"

    @property
    def sweep_url(self) -> str:
        """The sweep's own root on its storage: an absolute path, or a URL."""
        if "://" in self.storage:
            return f"{self.storage.rstrip('/')}/{self.name}"
        return str(Path(self.storage).expanduser().resolve() / self.name)

    @field_validator("storage_path")
    @classmethod
    def _storage_scheme(cls, value):
        if value is not None:
            problem = storage_scheme_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _storage_from_environment(self):
        if self.storage_path is None and os.environ.get("SSMIX_STORAGE_PATH"):
            problem = storage_scheme_problem(os.environ["SSMIX_STORAGE_PATH"])
            if problem:
                raise ValueError(f"$SSMIX_STORAGE_PATH: {problem}")
        return self


# The object stores a sweep can keep its results in (fsspec's names), and the package each needs.
OBJECT_STORES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                 "file": None}


def storage_scheme_problem(url: str) -> str | None:
    """Why a storage path with a scheme cannot hold a sweep (None if it can): a scheme the service
    does not write, or one whose library is not installed. A path without a scheme is a directory."""
    import importlib.util

    if "://" not in url:
        return None
    scheme = url.split("://", 1)[0].lower()
    if scheme not in OBJECT_STORES:
        return (f"{url!r}: the scheme {scheme}:// is not one a sweep can keep its results in; use a directory "
                f"or one of {', '.join(s + '://' for s in OBJECT_STORES)}")
    package = OBJECT_STORES[scheme]
    if package and importlib.util.find_spec(package) is None:
        return f"{url!r}: {scheme}:// needs the package {package} (pip install {package})"
    if not url.split("://", 1)[1].strip("/"):
        return f"{url!r}: name a bucket (and a prefix): {scheme}://bucket/prefix"
    return None


def _validation_lines(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}")
    return lines


def load_sweep(path: str | os.PathLike) -> SweepConfig:
    """Parse and validate a sweep file; every problem is listed at once, with its key."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: sweep file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SweepError(f"{path}:{where}: malformed YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping of sweep settings at the top level, got {type(raw).__name__}")
    try:
        sweep = SweepConfig(**raw)
    except ValidationError as err:
        lines = _validation_lines(err)
        raise SweepError(f"{path}: {len(lines)} error(s):\n" + "\n".join(lines)) from None
    _warn_duplicates(path, raw)
    return _absolute_paths(sweep)


def _warn_duplicates(path: Path, raw: dict) -> None:
    """A value listed twice is trained once; say so rather than drop it silently."""
    import sys

    for key in ("tasks", "methods", "seeds", "mix_ratios"):
        values = raw.get(key)
        if not isinstance(values, list):
            continue
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            print(f"ssmix: warning: {path}: {key} lists {', '.join(twice)} more than once; "
                  f"each cell is trained once", file=sys.stderr)


def _absolute_paths(sweep: SweepConfig) -> SweepConfig:
    """Relative paths in a sweep file mean relative to the directory the command runs in; trials
    run elsewhere (Ray workers), so they travel as absolute paths. A custom task's files are its
    own (never looked up under data_dir)."""
    updates = {}
    if sweep.data_dir:
        updates["data_dir"] = str(Path(sweep.data_dir).expanduser().resolve())
    if sweep.custom_tasks:
        updates["custom_tasks"] = [t.model_copy(update={"data_files": {
            split: str(Path(f).expanduser().resolve()) for split, f in (t.data_files or {}).items()}})
            for t in sweep.custom_tasks]
    return sweep.model_copy(update=updates) if updates else sweep
