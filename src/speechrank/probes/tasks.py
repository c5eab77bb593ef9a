"""The probe tasks and the label each one reads.

- ``ks`` keyword spotting: ``keyword12`` (Speech Commands' 12-class SUPERB map) where
  present, else ``keyword``; utterance probe; accuracy and macro-F1.
- ``sid`` speaker identification: ``speaker``; utterance probe; accuracy and macro-F1.
- ``er`` emotion recognition: ``emotion``; utterance probe; accuracy and macro-F1.
- ``label:COLUMN``: any label column (of a manifest, say); utterance probe; accuracy and
  macro-F1.
- ``pr`` phoneme recognition: a phone probe, of the first kind in :data:`DRIVERS` whose label
  column the dataset has: ``phones`` (time-aligned) for the frame classification probe scored
  by frame accuracy, else ``transcript`` for the linear CTC probe scored by phone error rate.

The first three and ``pr`` are the SUPERB tasks the speech-rank paper probes (Aldeneh et al.,
ICASSP 2025) plus SUPERB's emotion task (Yang et al., Interspeech 2021). Which kind runs a task,
and what that kind reads, measures and pools, is declared by the kind's driver
(:mod:`speechrank.probes.drivers`).
"""

from __future__ import annotations

from collections.abc import Iterable

from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError
from speechrank.probes.drivers import DRIVERS, TaskKind, TaskSpec

__all__ = ["TASK_NAMES", "TaskSpec", "available_labels", "has_label", "resolve_task"]

#: Task names the command line accepts (``label:COLUMN`` besides).
TASK_NAMES: tuple[str, ...] = ("ks", "sid", "er", "pr")

_UTTERANCE_LABELS: dict[str, tuple[str, ...]] = {
    "ks": ("keyword12", "keyword"),
    "sid": ("speaker",),
    "er": ("emotion",),
}
#: The kinds of the phone task, in the order they are tried: those whose driver reads a
#: column of its own (time-aligned phones, transcripts).
_PHONE_KINDS: tuple[TaskKind, ...] = tuple(k for k, d in DRIVERS.items() if d.reads)


def has_label(utt: Utterance, label: str) -> bool:
    """True when ``utt`` has a usable value for ``label`` (not missing, ``None`` or blank)."""
    value = utt.labels.get(label)
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple)):
        return len(value) > 0
    return not (isinstance(value, float) and value != value)  # NaN from a CSV


def available_labels(utterances: Iterable[Utterance]) -> list[str]:
    """Every label column that at least one utterance has a value for, sorted."""
    names: set[str] = set()
    for utt in utterances:
        names.update(k for k in utt.labels if has_label(utt, k))
    return sorted(names)


def _missing(dataset: Dataset, wanted: str, available: list[str]) -> SpeechrankError:
    listed = ", ".join(available) if available else "none"
    return SpeechrankError(f"dataset {dataset.spec} has no {wanted} labels; available: {listed}")


def resolve_task(task: str, dataset: Dataset, *, pr_kind: TaskKind | None = None) -> TaskSpec:
    """Check ``task`` and find the label column it reads in ``dataset``.

    ``pr_kind`` (``frames`` or ``ctc``) forces the phone probe's kind; by default ``pr`` uses
    the first phone kind whose column (``phones``, then ``transcript``) the dataset has.

    Raises a one-line :class:`SpeechrankError` for an unknown task or a dataset without the
    needed labels (naming the labels it does have).
    """
    name = (task or "").strip()
    available = available_labels(dataset.utterances)
    if name.startswith("label:"):
        column = name[len("label:"):].strip()
        if not column:
            raise SpeechrankError("task 'label:' needs a column name, e.g. label:accent")
        if column not in available:
            raise _missing(dataset, f"'{column}'", available)
        return TaskSpec(name=f"label:{column}", label=column, kind="utterance")
    if name in _UTTERANCE_LABELS:
        candidates = _UTTERANCE_LABELS[name]
        for column in candidates:
            if column in available:
                return TaskSpec(name=name, label=column, kind="utterance")
        wanted = " or ".join(f"'{c}'" for c in candidates)
        raise _missing(dataset, wanted, available)
    if name == "pr":
        if pr_kind is not None and pr_kind not in _PHONE_KINDS:
            raise ValueError(f"pr_kind must be one of {_PHONE_KINDS}, got {pr_kind!r}")
        kinds = (pr_kind,) if pr_kind is not None else _PHONE_KINDS
        for kind in kinds:
            column = DRIVERS[kind].reads
            if column in available:
                return TaskSpec(name="pr", label=str(column), kind=kind)
        raise _missing(dataset, " or ".join(f"'{DRIVERS[k].reads}'" for k in kinds), available)
    raise SpeechrankError(
        f"unknown task '{task}'; choose from {', '.join(TASK_NAMES)} or label:COLUMN")
