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
    # max_frames = {train = 2500, dev = 1250, test = 10000}

    [options]
    seed = 0
    batch_seconds = 32.0
    memo_gb = 2.0               # frames kept per checkpoint for reuse (0: encode every pass)
    fit_workers = 1             # probe layers fitted at once in worker processes

Probe-recipe overrides (:func:`probe_recipe`) apply to any probe kind's default recipe, so
``speechrank probe`` can take them as well as a sweep.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from speechrank.errors import SpeechrankError
from speechrank.extract import DEFAULT_MEMO_BYTES, FrameMemo
from speechrank.options import DEFAULT_BATCH_SECONDS, RunOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


#: Recipe options a ``[[probe]]`` table may set (see :func:`probe_recipe`).
PROBE_OPTIONS = ("c_grid", "max_iter", "fit_dtype", "max_frames", "max_audio_seconds")


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """One probe task of a sweep; ``options`` adjusts the task's default recipe."""

    name: str
    task: str
    data: str
    domain: str = "in"
    options: tuple[tuple[str, Any], ...] = ()


def probe_recipe(kind: str, options: dict[str, Any]) -> Any:
    """The default recipe of a probe kind with a sweep's options applied.

    ``c_grid`` replaces the logistic probe's grid of inverse L2 strengths and ``max_iter`` its
    lbfgs iteration cap (a fit that hits it is recorded as not converged), ``fit_dtype``
    (``float64`` or ``float32``) the type lbfgs works in; ``max_frames`` and
    ``max_audio_seconds`` cap the train split of frame and CTC probes (dev and test get
    half as much each), or, as a table ``{train = .., dev = .., test = ..}``, each split.
    Returns ``None`` when there are no options (the default recipe).
    """
    from speechrank.probes.config import SPLITS, default_config

    if not options:
        return None
    config = default_config(kind)
    changes: dict[str, Any] = {}
    logistic_changes = {}
    if "c_grid" in options:
        logistic_changes["c_grid"] = tuple(float(c) for c in options["c_grid"])
    if "max_iter" in options:
        logistic_changes["max_iter"] = int(options["max_iter"])
    if "fit_dtype" in options:
        if options["fit_dtype"] not in ("float64", "float32"):
            raise SpeechrankError(f"probe option fit_dtype must be 'float64' or 'float32', "
                                  f"got {options['fit_dtype']!r}")
        logistic_changes["fit_dtype"] = options["fit_dtype"]
    if logistic_changes:
        if not hasattr(config, "logistic"):
            raise SpeechrankError(f"probe options {sorted(logistic_changes)} do not apply to a "
                                  f"{kind} probe")
        changes["logistic"] = dataclasses.replace(config.logistic, **logistic_changes)
    for key in ("max_frames", "max_audio_seconds"):
        if key in options:
            if not hasattr(config, key):
                raise SpeechrankError(f"probe option {key} does not apply to a {kind} probe")
            value = options[key]
            if isinstance(value, dict):
                if set(value) != set(SPLITS) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                        for v in value.values()):
                    raise SpeechrankError(f"probe option {key}: a table needs positive train, "
                                          f"dev and test values, got {value!r}")
                changes[key] = {name: value[name] for name in SPLITS}
                continue
            half = value / 2 if isinstance(value, float) else value // 2
            changes[key] = {"train": value, "dev": half, "test": half}
    return dataclasses.replace(config, **changes)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What a sweep measures (parsed from the TOML file; see the module docstring)."""

    rank_data: str | None
    rank_options: dict[str, Any]
    probes: tuple[ProbeSpec, ...]
    seed: int = 0
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    max_seconds: float | None = None
    cache_dir: str | None = None
    memo_gb: float = DEFAULT_MEMO_BYTES / 1024**3
    fit_workers: int = 1

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
        except tomllib.TOMLDecodeError as err:
            raise SpeechrankError(f"{path}: not valid TOML ({err})") from err
        return cls.from_dict(raw, base=path.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path | None = None) -> SweepConfig:
        base = base or Path(".")
        known = {"rank", "probe", "options"}
        unknown = set(raw) - known
        if unknown:
            raise SpeechrankError(f"sweep config: unknown section(s) {sorted(unknown)}; "
                                  f"expected {sorted(known)}")
        rank = dict(raw.get("rank", {}))
        rank_data = rank.pop("data", None)
        allowed_rank = {"num_utterances", "max_seconds", "poolings", "metrics", "layers",
                        "max_frames", "n_clusters", "protocol", "total_seconds"}  # issue 14
        bad = set(rank) - allowed_rank
        if bad:
            raise SpeechrankError(f"sweep config [rank]: unknown key(s) {sorted(bad)}")
        probes = []
        names: set[str] = set()
        for i, entry in enumerate(raw.get("probe", [])):
            missing = {"task", "data"} - set(entry)
            if missing:
                raise SpeechrankError(f"sweep config [[probe]] #{i + 1}: missing "
                                      f"{sorted(missing)}")
            name = str(entry.get("name", entry["task"]))
            if name in names:
                raise SpeechrankError(f"sweep config: probe name '{name}' used twice")
            names.add(name)
            domain = str(entry.get("domain", "in"))
            unknown_keys = set(entry) - {"name", "task", "data", "domain", *PROBE_OPTIONS}
            if unknown_keys:
                raise SpeechrankError(f"sweep config [[probe]] '{name}': unknown key(s) "
                                      f"{sorted(unknown_keys)}")
            options = tuple((key, entry[key]) for key in PROBE_OPTIONS if key in entry)
            probes.append(ProbeSpec(name=name, task=str(entry["task"]),
                                    data=_resolve_data(str(entry["data"]), base), domain=domain,
                                    options=options))
        options = dict(raw.get("options", {}))
        unknown_options = set(options) - {"seed", "batch_seconds", "max_seconds", "cache_dir",
                                          "memo_gb", "fit_workers"}
        if unknown_options:
            raise SpeechrankError(f"sweep config [options]: unknown key(s) "
                                  f"{sorted(unknown_options)}")
        memo_gb = float(options.get("memo_gb", DEFAULT_MEMO_BYTES / 1024**3))
        if not memo_gb >= 0:
            raise SpeechrankError(f"sweep config [options]: memo_gb must be >= 0, got {memo_gb}")
        fit_workers = options.get("fit_workers", 1)
        if isinstance(fit_workers, bool) or not isinstance(fit_workers, int) or fit_workers < 1:
            raise SpeechrankError(f"sweep config [options]: fit_workers must be an integer >= 1, "
                                  f"got {fit_workers!r}")
        if rank_data is None and not probes:
            raise SpeechrankError("sweep config names neither [rank] data nor any [[probe]]")
        return cls(rank_data=_resolve_data(rank_data, base) if rank_data else None,
                   rank_options=rank, probes=tuple(probes),
                   seed=int(options.get("seed", 0)),
                   batch_seconds=float(options.get("batch_seconds", DEFAULT_BATCH_SECONDS)),
                   max_seconds=options.get("max_seconds"),
                   cache_dir=options.get("cache_dir"), memo_gb=memo_gb,
                   fit_workers=fit_workers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resolve_data(spec: str, base: Path) -> str:
    """A DATA spec of a config file in its one spelling (relative paths are relative to that
    file; see :func:`speechrank.audio.datasets.resolve_spec`)."""
    from speechrank.audio.datasets import resolve_spec

    return resolve_spec(spec, base)
