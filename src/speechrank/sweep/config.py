"""The sweep file: what a sweep measures, parsed from TOML, and the probe-recipe overrides.

The sweep is described by a TOML file::

    [rank]                      # the label-free metrics
    data = "synthetic:corpus"   # any DATA spec
    num_utterances = 500        # optional, like `speechrank rank`
    max_seconds = 6.0
    poolings = ["sum", "mean", "frames"]
    metrics = ["rankme", "rankme_centered", "erank_cov", "alpha_req"]
    layers = "all"
    max_frames = 25600
    # protocol = "whetten2025"  # optional preset; the keys above still win

    [[probe]]                   # one table per probe task
    name = "ks"                 # unique name shown in the report
    task = "ks"                 # ks | sid | er | pr | label:COLUMN
    data = "synthetic:corpus"
    domain = "in"               # in-domain or out-of-domain ("out")
    # c_grid = [0.1, 1.0]       # optional recipe options (see probe_recipe)
    # max_iter = 100
    # fit_dtype = "float32"     # lbfgs in float32 (default "float64")
    # solver = "sklearn"        # logistic solver: "torch" (batched, default) or "sklearn"
    # max_frames = {train = 2500, dev = 1250, test = 10000}

    [options]
    seed = 0
    batch_seconds = 32.0
    memo_gb = 2.0               # frames kept per checkpoint for reuse (0: encode every pass)
    fit_workers = 1             # probe layers fitted at once in worker processes
    checkpoint_workers = "auto" # checkpoints swept side by side in worker processes (or N)

Every section is a strict pydantic model (:data:`SECTIONS`), checked once when the file is
read: a wrong key, type or value is one line naming the section, the key, the value and what
is allowed. A ``[[probe]]`` table may also set any key of its kind's recipe
(:mod:`speechrank.probes.recipes`: ``c_grid``, ``max_iter``, ``max_frames`` ...), the same
keys ``speechrank probe --recipe`` reads.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BeforeValidator, Field

from speechrank.errors import SpeechrankError
from speechrank.extract import DEFAULT_MEMO_BYTES, FrameMemo
from speechrank.metrics import LAYER_METRIC_NAMES
from speechrank.options import DEFAULT_BATCH_SECONDS, Pooling, RunOptions
from speechrank.probes.config import Count, NonNegative, Positive, Text
from speechrank.probes.recipes import RecipeTable, recipe_with
from speechrank.spec import MeasureSpec, ProtocolName
from speechrank.validation import STRICT, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _comma_list(value: Any) -> Any:
    """``"sum,mean"`` as ``["sum", "mean"]`` (the command line's spelling of a list)."""
    return [part.strip() for part in value.split(",")] if isinstance(value, str) else value


#: A metric the sweep may measure per layer (or ``all``).
MetricName = Literal[(*LAYER_METRIC_NAMES, "all")]  # type: ignore[valid-type]


class RankTable(pydantic.BaseModel):
    """``[rank]``: the label-free metrics (the options of ``speechrank rank``)."""

    model_config = STRICT
    data: Text
    num_utterances: Count | None = None
    max_seconds: Positive | None = None
    poolings: Annotated[list[Pooling], BeforeValidator(_comma_list), Field(min_length=1)] | None \
        = None
    metrics: Annotated[list[MetricName], BeforeValidator(_comma_list),
                       Field(min_length=1)] | None = None
    layers: Text | Annotated[list[Text | int], Field(min_length=1)] | None = None
    max_frames: Count | None = None
    n_clusters: Annotated[int, Field(ge=2)] | None = None
    protocol: ProtocolName | None = None
    total_seconds: Positive | None = None


class ProbeTable(RecipeTable):  # type: ignore[valid-type,misc]
    """``[[probe]]``: one probe task, plus any key of its recipe (see :data:`RecipeTable`)."""

    name: Text | None = None
    task: Text
    data: Text
    domain: Literal["in", "out"] = "in"


class OptionsTable(pydantic.BaseModel):
    """``[options]``: what every unit shares."""

    model_config = STRICT
    seed: Annotated[int, Field(ge=0)] = 0
    batch_seconds: Positive = DEFAULT_BATCH_SECONDS
    max_seconds: Positive | None = None
    cache_dir: Text | None = None
    memo_gb: NonNegative = DEFAULT_MEMO_BYTES / 1024**3
    fit_workers: Count = 1
    #: checkpoints swept side by side in worker processes (see speechrank.sweep.process_executor)
    checkpoint_workers: Count | Literal["auto"] = "auto"


#: The sections of a sweep file and their schemas.
SECTIONS: dict[str, type[pydantic.BaseModel]] = {
    "rank": RankTable, "probe": ProbeTable, "options": OptionsTable}
#: Recipe keys a ``[[probe]]`` table may set (see :mod:`speechrank.probes.recipes`).
PROBE_OPTIONS: tuple[str, ...] = tuple(RecipeTable.model_fields)
_PROBE_KEYS = tuple(name for name in ProbeTable.model_fields if name not in PROBE_OPTIONS)


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """One probe task of a sweep; ``options`` adjusts the task's default recipe."""

    name: str
    task: str
    data: str
    domain: str = "in"
    options: tuple[tuple[str, Any], ...] = ()


def probe_recipe(kind: str, options: dict[str, Any], where: str = "probe options") -> Any:
    """The default recipe of a probe kind with a table of recipe keys applied
    (:func:`speechrank.probes.recipes.recipe_with`); ``None`` when the table is empty (the
    default recipe)."""
    from speechrank.probes.drivers import default_config

    if not options:
        return None
    return recipe_with(default_config(kind), options, kind=kind, where=where)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What a sweep measures (parsed from the TOML file; see the module docstring)."""

    rank_data: str | None
    rank_spec: MeasureSpec | None
    probes: tuple[ProbeSpec, ...]
    seed: int = 0
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    max_seconds: float | None = None
    cache_dir: str | None = None
    memo_gb: float = DEFAULT_MEMO_BYTES / 1024**3
    fit_workers: int = 1
    checkpoint_workers: int | Literal["auto"] = "auto"

    def new_memo(self) -> FrameMemo | None:
        """A fresh frame memo for one checkpoint's units (``None`` when ``memo_gb`` is 0)."""
        return FrameMemo(int(self.memo_gb * 1024**3)) if self.memo_gb > 0 else None

    def run_options(self) -> RunOptions:
        """The ``[options]`` section as the shared :class:`~speechrank.options.RunOptions`
        (a ``[rank]`` section may override its subset size, crop and frame cap)."""
        return RunOptions(seed=self.seed, batch_seconds=self.batch_seconds,
                          crop_seconds=self.max_seconds)

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepConfig:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise SpeechrankError(f"sweep config not found: {path}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise SpeechrankError(f"cannot read sweep config {path}: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise SpeechrankError(f"{path}: not valid TOML ({err})") from err
        return cls.from_dict(raw, base=path.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path | None = None) -> SweepConfig:
        """Check ``raw`` against :data:`SECTIONS` (one line per mistake) and build the config;
        relative DATA paths are taken relative to ``base``."""
        base = base or Path(".")
        unknown = set(raw) - set(SECTIONS)
        if unknown:
            raise SpeechrankError(f"sweep config: unknown section(s) {sorted(unknown)}; "
                                  f"expected {sorted(SECTIONS)}")
        rank = (validate(RankTable, raw["rank"], where="sweep config [rank]")
                if "rank" in raw else None)
        entries = raw.get("probe", [])
        if not isinstance(entries, list):
            raise SpeechrankError("sweep config probe: expected [[probe]] tables, got "
                                  f"{entries!r}"[:120])
        probes: list[ProbeSpec] = []
        for i, entry in enumerate(entries):
            where = f"sweep config [[probe]] #{i + 1}"
            table = validate(ProbeTable, entry, where=where)
            name = table.name or table.task
            if name in {probe.name for probe in probes}:
                raise SpeechrankError(f"sweep config: probe name '{name}' used twice")
            options = tuple((key, value) for key, value in
                            table.model_dump(exclude_unset=True).items()
                            if key not in _PROBE_KEYS)
            probes.append(ProbeSpec(name=name, task=table.task,
                                    data=_resolve_data(table.data, base), domain=table.domain,
                                    options=options))
        options = validate(OptionsTable, raw.get("options", {}), where="sweep config [options]")
        if rank is None and not probes:
            raise SpeechrankError("sweep config names neither [rank] data nor any [[probe]]")
        return cls(rank_data=_resolve_data(rank.data, base) if rank else None,
                   rank_spec=rank_spec(rank, options) if rank else None,
                   probes=tuple(probes), seed=options.seed,
                   batch_seconds=options.batch_seconds, max_seconds=options.max_seconds,
                   cache_dir=options.cache_dir, memo_gb=options.memo_gb,
                   fit_workers=options.fit_workers,
                   checkpoint_workers=options.checkpoint_workers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def rank_spec(rank: RankTable, options: OptionsTable) -> MeasureSpec:
    """The measurement of a ``[rank]`` table: its keys over the ``[options]`` shared by every
    unit (seed, batch seconds, crop), over :class:`~speechrank.spec.MeasureSpec`'s defaults."""
    given = rank.model_dump(exclude_unset=True, exclude={"data"})
    fields: dict[str, Any] = {"seed": options.seed, "batch_seconds": options.batch_seconds,
                              "crop_seconds": given.pop("max_seconds", options.max_seconds)}
    return MeasureSpec(**fields, **given)


def _resolve_data(spec: str, base: Path) -> str:
    """A DATA spec of a config file in its one spelling (relative paths are relative to that
    file; see :func:`speechrank.audio.datasets.resolve_spec`)."""
    from speechrank.audio.datasets import resolve_spec

    return resolve_spec(spec, base)
