"""The checkpoint series of a sweep: which checkpoints, in which training order, under which run.

A series is a run directory (its complete checkpoints, in any format of the registry
:mod:`speechrank.encoders.formats`), a single checkpoint (a directory or a file such as a
fairseq ``.pt``), or a text file listing one checkpoint per line.

Identity never depends on spelling. Checkpoints are kept by resolved path; a run is known by
its :attr:`CheckpointSeries.source` (the resolved run directory, list file, or the directory
holding a single checkpoint), and its name in a store is the shortest tail of that path no
other run of the store holds (:func:`speechrank.sweep.run.run_units` decides it), so two runs
both called ``checkpoints/`` get ``checkpoints`` and ``b/checkpoints``. A checkpoint's
:attr:`Checkpoint.key` (its part of a unit key) is its step, or its content digest where the
step is unknown or shared within the series.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from speechrank.encoders import formats
from speechrank.errors import SpeechrankError
from speechrank.store import CheckpointRecord

#: Hex digits of the content digest kept in a unit key (64 bits: unique within a run).
KEY_DIGEST_CHARS = 16


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of the series: where it is (resolved path, or the spec of a checkpoint
    that is no file, ``random:NAME``), its name in results, its training step, its format,
    its content digest and its identity in unit keys (see :func:`checkpoint_keys`)."""

    path: str
    name: str
    step: int | None
    format: str = ""
    digest: str | None = None
    key: str = ""


def _on_disk(target: str) -> bool:
    fmt = formats.detect(target)
    return not (fmt is not None and fmt.claims_spec(target))


def _checkpoint(target: str | Path, step: int | None = None) -> Checkpoint:
    """A checkpoint the registry claims, with its step (``step`` overrides the format's)."""
    found = formats.describe(target)
    is_spec = isinstance(target, str) and not _on_disk(target)
    path = str(found.path) if is_spec else str(found.path.resolve())
    return Checkpoint(path=path, name=found.name, step=found.step if step is None else step,
                      format=found.format.name)


def _read_list(path: Path) -> list[Checkpoint]:
    found = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2:
            raise SpeechrankError(f"{path}:{lineno}: expected 'PATH [STEP]'")
        target = parts[0]
        step: int | None = None
        if len(parts) == 2:
            try:
                step = int(parts[1])
            except ValueError as err:
                raise SpeechrankError(f"{path}:{lineno}: step must be an integer") from err
        if not _on_disk(target):
            found.append(_checkpoint(target, 0 if step is None else step))
            continue
        resolved = Path(target).expanduser()
        resolved = resolved if resolved.is_absolute() else path.parent / resolved
        if formats.detect(resolved) is None:
            raise SpeechrankError(f"{path}:{lineno}: {resolved} is not a checkpoint of any "
                                  f"known format ({', '.join(f.name for f in formats.FORMATS)})")
        found.append(_checkpoint(resolved, step))
    return found


def _is_list_file(path: Path) -> bool:
    return path.is_file() and formats.detect(path) is None


def _find(spec: str | Path) -> tuple[str, list[Checkpoint]]:
    """(``list``, ``run`` or ``single``, the checkpoints in training order)."""
    path = Path(spec).expanduser()
    found: list[Checkpoint] = []
    kind = "run"
    if _is_list_file(path):
        kind, found = "list", _read_list(path)
    elif path.is_dir():
        found = [_checkpoint(c.path) for c in formats.run_checkpoints(path)]
        if not found and formats.detect(path) is not None:
            kind, found = "single", [_checkpoint(path)]
    elif path.exists():
        kind, found = "single", [_checkpoint(path)]
    else:
        raise SpeechrankError(f"checkpoints not found: {spec}")
    if not found:
        raise SpeechrankError(f"no checkpoints in {spec} (no format of "
                              f"{', '.join(f.name for f in formats.FORMATS)} claims its "
                              "entries)")
    return kind, sorted(_unique_names(found),
                        key=lambda c: (c.step is None, c.step or 0, c.name))


def find_checkpoints(spec: str | Path) -> list[Checkpoint]:
    """The checkpoints of a series, in training order (by step, unknown steps last).

    ``spec`` is a run directory (the complete checkpoints its formats list: ``speechrank
    pretrain``'s ``checkpoint-NNNNNN/``, a Hugging Face Trainer's ``checkpoint-N/``, a fairseq
    save directory's ``checkpoint*.pt`` ...), a single checkpoint (directory or file), or a
    text file listing one checkpoint per line (``PATH`` or ``PATH STEP``, relative to the
    file; ``#`` starts a comment; ``random:NAME`` is allowed and counts as step 0 unless a
    step is given). Names are made unique within the series (a parent directory is prefixed
    where two listed checkpoints share one).
    """
    return _find(spec)[1]


def _tails(path: str) -> list[str]:
    """``c``, ``b/c``, ``a/b/c``, ... of a path (shortest first; the whole path last)."""
    parts = [p for p in Path(path).parts if p != "/"]
    tails = ["/".join(parts[i:]) for i in range(len(parts) - 1, -1, -1)]
    return [*tails, path] if path not in tails else tails


def _unique_names(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """Checkpoints whose names clash get the shortest path tail that tells them apart."""
    names = [c.name for c in checkpoints]
    for i, checkpoint in enumerate(checkpoints):
        if names.count(checkpoint.name) == 1 or not _on_disk(checkpoint.path):
            continue
        for tail in _tails(checkpoint.path)[1:]:
            if not any(tail == other or other.endswith("/" + tail)
                       for j, other in enumerate(c.path for c in checkpoints) if j != i):
                names[i] = tail
                break
    return [dataclasses.replace(c, name=n) for c, n in zip(checkpoints, names, strict=True)]


def checkpoint_keys(checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
    """Each checkpoint with its :attr:`~Checkpoint.digest` and :attr:`~Checkpoint.key`:
    ``step:N`` when its step is known and no other checkpoint of the series has it, else
    ``sha256:`` and the first 16 hex digits of its content digest (``name:NAME`` for a
    checkpoint without content)."""
    steps = [c.step for c in checkpoints]
    out = []
    for checkpoint in checkpoints:
        fmt = formats.by_name(checkpoint.format)
        digest = checkpoint.digest or fmt.digest(Path(checkpoint.path))
        if checkpoint.step is not None and steps.count(checkpoint.step) == 1:
            key = f"step:{checkpoint.step}"
        elif digest:
            algorithm, _, hexdigest = digest.partition(":")
            key = f"{algorithm}:{hexdigest[:KEY_DIGEST_CHARS]}"
        else:
            key = f"name:{checkpoint.name}"
        out.append(dataclasses.replace(checkpoint, digest=digest, key=key))
    return out


def run_names(checkpoints: Sequence[Checkpoint], spec: str | Path,
              kind: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The identity of the run a series belongs to (a resolved path) and the names it may
    take in a store, shortest first: the tails of the run directory's path (for a single
    checkpoint, of the directory holding it; for a list file, of the directory holding its
    first checkpoint on disk, else of the list file without its suffix). ``kind`` is what
    ``spec`` is (``run``, ``single`` or ``list``; found again when not given)."""
    path = Path(spec).expanduser()
    if kind is None:
        kind = _find(spec)[0]
    if kind == "list":
        source = path.resolve()
        on_disk = [c for c in checkpoints if _on_disk(c.path)]
        named = Path(on_disk[0].path).parent if on_disk else source.with_suffix("")
    elif kind == "run":
        source = named = path.resolve()
    else:
        source = named = Path(checkpoints[0].path).parent
    return str(source), tuple(_tails(str(named)))


def run_name(checkpoints: Sequence[Checkpoint], spec: str | Path) -> str:
    """The run's preferred name: its directory's name (see :func:`run_names`)."""
    return run_names(checkpoints, spec)[1][0]


@dataclasses.dataclass(frozen=True)
class CheckpointSeries:
    """The checkpoints of one run, in training order, under the run's name in the store.

    ``source`` is the run's identity (a resolved path) and ``names`` the names it may take,
    shortest first; the store it is swept into decides which (see
    :meth:`speechrank.store.ResultStore.claim_run`).
    """

    run: str
    checkpoints: tuple[Checkpoint, ...]
    source: str = ""
    names: tuple[str, ...] = ()

    def records(self) -> list[CheckpointRecord]:
        """What the store records of each checkpoint: resolved path, format, step, content
        digest and training record, all read by the checkpoint's format."""
        records = []
        for checkpoint in self.checkpoints:
            fmt = formats.by_name(checkpoint.format)
            path = Path(checkpoint.path)
            digest = checkpoint.digest or fmt.digest(path)
            records.append(CheckpointRecord(
                run=self.run, checkpoint=checkpoint.name, path=checkpoint.path,
                format=fmt.name, step=checkpoint.step, digest=digest,
                training=fmt.training(path)))
        return records


def find_series(spec: str | Path) -> CheckpointSeries:
    """The checkpoints of ``spec`` (see :func:`find_checkpoints`), their unit-key identities,
    and the run they belong to."""
    kind, found = _find(spec)
    checkpoints = checkpoint_keys(found)
    source, names = run_names(checkpoints, spec, kind)
    return CheckpointSeries(run=names[0], checkpoints=tuple(checkpoints), source=source,
                            names=names)
