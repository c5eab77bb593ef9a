"""The results store: one SQLite file holding every tidy :class:`~speechrank.results.ResultRow`.

A sweep over checkpoints is long and may be interrupted, so the store is built around *units
of work* (one checkpoint x dataset x task, say). The rows of a unit are buffered in memory and
written, together with the unit's bookkeeping row, in one SQLite transaction when the unit
finishes. A unit that raises, or a process that is killed, leaves nothing behind; a rerun asks
:meth:`ResultStore.is_done` and recomputes only the missing units. Every row has an identity
(model, checkpoint, dataset, layer, pooling, metric, task, split, domain and a hash of the
conventions that matter), so writing a measurement again replaces it instead of duplicating it.

Layout (schema version 3)::

    schema_version(version)
    results(id, model, checkpoint, step, dataset, layer, pooling, metric, value, n_rows, dim,
            task, split, domain, conventions, conventions_hash, unit, updated_at)
    units(key, status, started_at, finished_at, wall_s, n_results, meta)
    meta(key, value)
    checkpoints(run, checkpoint, path, format, step, digest, training, recorded_at)

``checkpoints`` says what each checkpoint a sweep measured is: where it lies (resolved path),
its format, its training step, a digest of its content and its training record (loss, masked
accuracy, learning rate where the format keeps them), so an analysis can set the label-free
metrics beside the signals a training run gives for free.

Identity never depends on spelling (version 3). A sweep's unit keys are
``RUN|step:N|rank|DATA`` (the checkpoint's step, or its content digest where the step is
unknown), DATA and the ``dataset`` column hold the resolved spelling of a DATA spec
(:func:`speechrank.audio.datasets.resolve_spec`), and ``meta['runs']`` maps each run's name
to the resolved path it stands for (:meth:`ResultStore.claim_run`), so a run keeps its name
and two runs never share one. Older stores are migrated on open, in one transaction: version 1
gains the ``checkpoints`` table; versions 1 and 2 get their sweep units rekeyed
(``RUN|CHECKPOINT_NAME|...`` -> ``RUN|step:N|...``, from each unit's recorded step when it is
unique in its run) and every DATA spelling resolved, relative ones against the store's
directory, its parents, then the working directory, the first where the data lies; a dataset
held under two spellings becomes one, the newer of two equal measurements kept (see
:meth:`ResultStore._rekey`). A spelling that resolves nowhere is left as it was.

``conventions``, ``meta`` and ``training`` are JSON text. ``value`` is ``NULL`` for NaN
(SQLite stores NaN as ``NULL``); reading gives NaN back. The file uses write-ahead logging and
``synchronous=NORMAL``: a committed unit survives a process crash, and readers never block the
writer.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from speechrank import jsonsafe
from speechrank.errors import SpeechrankError
from speechrank.results import ResultRow, layer_sort_key

__all__ = [
    "IDENTITY_COLUMNS",
    "SCHEMA_VERSION",
    "VOLATILE_CONVENTION_KEYS",
    "CheckpointRecord",
    "ResultStore",
    "UnitRecord",
    "UnitWork",
    "conventions_hash",
]

#: Version of the on-disk layout; a store written by a newer layout is refused.
SCHEMA_VERSION = 3

#: Columns (besides the conventions hash) that identify one measurement.
IDENTITY_COLUMNS: tuple[str, ...] = (
    "model", "checkpoint", "dataset", "layer", "pooling", "metric", "task", "split", "domain",
)

#: Convention keys that describe *how fast* or *where* a value was computed, not *what* was
#: computed. They are stored with the row but left out of its identity, so a rerun on another
#: machine or with another batch size replaces the earlier value instead of adding a second one.
VOLATILE_CONVENTION_KEYS: frozenset[str] = frozenset({
    "wall_s", "elapsed_s", "seconds", "timestamp", "created_at", "started_at", "finished_at",
    "host", "hostname", "versions", "speechrank_version", "torch_version",
    "transformers_version", "device", "threads", "num_threads", "batch_size", "batch_seconds",
    # outcomes carried beside a value (its uncertainty), not part of what was measured
    "standard_error", "standard_error_method",
    # measured by-products carried beside a value, not part of its identity
    "convergence", "dominance",
})

_ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ResultRow))
_FILTER_COLUMNS: frozenset[str] = frozenset(_ROW_FIELDS) - {"conventions"} | {"unit"}
_EXPORT_COLUMNS: tuple[str, ...] = (*_ROW_FIELDS, "conventions_hash")

#: The table added by schema version 2 (also what a version-1 store gains on migration).
_CHECKPOINTS_SCHEMA: tuple[str, ...] = ("""
CREATE TABLE checkpoints (
    run TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    step INTEGER,
    digest TEXT,
    training TEXT NOT NULL DEFAULT '{}',
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (run, checkpoint)
)""",)

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    step INTEGER,
    dataset TEXT NOT NULL,
    layer TEXT NOT NULL,
    pooling TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    n_rows INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    task TEXT NOT NULL DEFAULT '',
    split TEXT NOT NULL DEFAULT '',
    domain TEXT NOT NULL DEFAULT '',
    conventions TEXT NOT NULL DEFAULT '{}',
    conventions_hash TEXT NOT NULL,
    unit TEXT,
    updated_at TEXT NOT NULL,
    UNIQUE (model, checkpoint, dataset, layer, pooling, metric, task, split, domain,
            conventions_hash)
);
CREATE INDEX results_by_metric ON results (metric, task, pooling);
CREATE INDEX results_by_unit ON results (unit);
CREATE TABLE units (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT NOT NULL,
    wall_s REAL,
    n_results INTEGER NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + "".join(f"{statement};\n" for statement in _CHECKPOINTS_SCHEMA)

_UPSERT = f"""
INSERT INTO results ({", ".join(_ROW_FIELDS)}, conventions_hash, unit, updated_at)
VALUES ({", ".join("?" * (len(_ROW_FIELDS) + 3))})
ON CONFLICT ({", ".join(IDENTITY_COLUMNS)}, conventions_hash) DO UPDATE SET
    step = excluded.step, value = excluded.value, n_rows = excluded.n_rows,
    dim = excluded.dim, conventions = excluded.conventions, unit = excluded.unit,
    updated_at = excluded.updated_at
"""


def _now(offset_s: float = 0.0) -> str:
    """The UTC time ``offset_s`` seconds from now, ISO 8601 to the second."""
    moment = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=offset_s)
    return moment.isoformat(timespec="seconds")


def _to_json(obj: Any, *, canonical: bool = False) -> str:
    """Strict JSON with non-finite floats as strings (:mod:`speechrank.jsonsafe`'s ``"string"``
    policy), so a stored convention keeps its value and its hash."""
    try:
        normalised = jsonsafe.plain(obj, non_finite="string", strict=True)
    except TypeError as exc:
        raise SpeechrankError(f"value is not JSON-serialisable: {exc}") from None
    if canonical:
        return json.dumps(normalised, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False)
    return json.dumps(normalised, sort_keys=True, allow_nan=False)


def conventions_hash(conventions: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``conventions`` without :data:`VOLATILE_CONVENTION_KEYS`.

    Canonical JSON: keys sorted at every level, no whitespace, ASCII only, tuples as lists,
    numpy scalars as Python numbers, NaN/inf as strings. Two rows whose conventions differ only
    in volatile keys (wall time, device, versions, batch size) hash alike.
    """
    kept = {k: v for k, v in conventions.items() if k not in VOLATILE_CONVENTION_KEYS}
    return hashlib.sha256(_to_json(kept, canonical=True).encode("ascii")).hexdigest()


@dataclasses.dataclass(frozen=True)
class CheckpointRecord:
    """What the store knows of one checkpoint of a run.

    ``run`` and ``checkpoint`` are the ``model`` and ``checkpoint`` of the checkpoint's result
    rows; ``path`` is where it was read (resolved), ``format`` the checkpoint format's name,
    ``digest`` a digest of its content (``None`` where none was taken) and ``training`` its
    training record: ``loss``, ``accuracy`` (masked-prediction accuracy) and ``learning_rate``
    where the format keeps them (a key is absent when unknown; speechrank's own ``loss`` is the
    mean over the steps since the previous checkpoint, so step 0 has none).
    """

    run: str
    checkpoint: str
    path: str
    format: str
    step: int | None
    digest: str | None = None
    training: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class UnitRecord:
    """Bookkeeping of one finished unit of work."""

    key: str
    status: str
    started_at: str | None
    finished_at: str
    wall_s: float | None
    n_results: int
    meta: dict[str, Any]


@dataclasses.dataclass
class UnitWork:
    """The open unit inside :meth:`ResultStore.unit`: rows and metadata waiting for commit."""

    key: str
    meta: dict[str, Any]
    rows: list[ResultRow] = dataclasses.field(default_factory=list)

    def add_rows(self, rows: Iterable[ResultRow]) -> None:
        """Buffer rows; they are written when the unit's ``with`` block ends without error."""
        self.rows.extend(_check_row(r) for r in rows)


def _check_row(row: Any) -> ResultRow:
    if not isinstance(row, ResultRow):
        raise SpeechrankError(f"the store takes ResultRow objects, not {type(row).__name__}")
    return row


def _row_params(row: ResultRow, unit: str | None, now: str) -> tuple[Any, ...]:
    conventions = dict(row.conventions or {})
    value = float(row.value)
    return (
        str(row.model), str(row.checkpoint), None if row.step is None else int(row.step),
        str(row.dataset), str(row.layer), str(row.pooling), str(row.metric),
        None if value != value else value, int(row.n_rows), int(row.dim),
        str(row.task or ""), str(row.split or ""), str(row.domain or ""),
        _to_json(conventions), conventions_hash(conventions), unit, now,
    )


def _row_from_db(record: sqlite3.Row) -> ResultRow:
    value = record["value"]
    return ResultRow(
        model=record["model"], checkpoint=record["checkpoint"], step=record["step"],
        dataset=record["dataset"], layer=record["layer"], pooling=record["pooling"],
        metric=record["metric"], value=math.nan if value is None else float(value),
        n_rows=record["n_rows"], dim=record["dim"], task=record["task"],
        split=record["split"], domain=record["domain"],
        conventions=json.loads(record["conventions"]),
    )


def _sort_key(row: ResultRow) -> tuple[Any, ...]:
    return (row.model, row.step is not None, row.step or 0, row.checkpoint, row.dataset,
            row.task, row.split, row.domain, row.metric, row.pooling, layer_sort_key(row.layer),
            row.layer)


def _split_unit_key(key: str, run: str | None) -> tuple[str, str, str, str] | None:
    """(run, checkpoint, kind, what) of a sweep unit key ``RUN|CHECKPOINT|KIND|WHAT``
    (``run``, when given and a prefix, is taken whole: a run name may hold ``|``); None for
    any other key (a monitor's unit, say)."""
    if run is not None and key.startswith(run + "|"):
        head, rest = run, key[len(run) + 1:]
    else:
        head, _, rest = key.partition("|")
    parts = rest.split("|", 2)
    if len(parts) != 3 or parts[1] not in ("rank", "probe") or parts[0].startswith("step:"):
        return None
    return head, parts[0], parts[1], parts[2]


def _spelling_resolver(store_path: Path) -> Any:
    """``resolve(spelling) -> resolved spelling or None`` for DATA spellings of an old
    store: absolute ones as they are, relative ones against the store's directory, its
    parents and then the working directory, the first where the data exists (None when it
    exists nowhere, or the spelling is no DATA spec)."""
    from speechrank.audio.datasets import parse_spec, resolve_spec

    directory = store_path.resolve().parent
    bases = [directory, *directory.parents, Path.cwd()]
    cache: dict[str, str | None] = {}

    def resolve(spelling: str) -> str | None:
        if spelling in cache:
            return cache[spelling]
        found = None
        try:
            if Path(parse_spec(spelling).path).is_absolute():
                found = resolve_spec(spelling)
            else:
                for base in bases:
                    candidate = resolve_spec(spelling, base)
                    if parse_spec(candidate).path.exists():
                        found = candidate
                        break
        except SpeechrankError:
            found = None
        cache[spelling] = found
        return found

    return resolve


class ResultStore:
    """An SQLite file of tidy result rows with resumable units of work.

    >>> with ResultStore("results.sqlite") as store:           # doctest: +SKIP
    ...     if not store.is_done("ckpt-1000/fsdd/ks"):
    ...         with store.unit("ckpt-1000/fsdd/ks", meta={"n_utts": 300}) as work:
    ...             work.add_rows(compute_rows())
    ...     rows = store.rows(metric="rankme", layer=["3", "4"])

    ``create=False`` refuses a path that does not exist (for commands that only read).
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise SpeechrankError(f"{self.path}: is a directory, not a results store file")
        if not self.path.exists():
            if not create:
                raise SpeechrankError(f"{self.path}: no such results store")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pending: UnitWork | None = None
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise SpeechrankError(f"{self.path}: cannot open results store ({exc})") from None
        self._conn.row_factory = sqlite3.Row
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise SpeechrankError(
                f"{self.path}: not a speechrank results store (not an SQLite database: {exc})"
            ) from None
        except SpeechrankError:
            self._conn.close()
            raise

    # ------------------------------------------------------------------ setup and lifetime
    def _setup(self) -> None:
        conn = self._conn
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_version" not in tables:
            if tables - {"sqlite_sequence"}:
                raise SpeechrankError(
                    f"{self.path}: not a speechrank results store (an SQLite database without "
                    "a schema_version table)")
            conn.execute("PRAGMA journal_mode=WAL")
            with self._transaction():
                # another process may have created the store while we waited for the lock
                if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                    "name='schema_version'").fetchone():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)",
                                 (SCHEMA_VERSION,))
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if version is None:
            raise SpeechrankError(f"{self.path}: results store has no schema version")
        if version > SCHEMA_VERSION:
            raise SpeechrankError(
                f"{self.path}: results store has schema version {version}, newer than this "
                f"speechrank understands ({SCHEMA_VERSION}); upgrade speechrank")
        if version < SCHEMA_VERSION:
            self._migrate(version)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")

    def _migrate(self, version: int) -> None:
        """Bring a store of an older schema version up to :data:`SCHEMA_VERSION`, in one
        transaction (a store that another process migrated meanwhile is left alone)."""
        with self._transaction() as conn:
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if current >= SCHEMA_VERSION:
                return
            if current < 2:
                for statement in _CHECKPOINTS_SCHEMA:
                    conn.execute(statement)
            if current < 3:
                self._rekey(conn)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    def _rekey(self, conn: sqlite3.Connection) -> None:
        """Version 3's identities for a store written before them (see the module docstring).

        A sweep unit ``RUN|NAME|rank|DATA`` (or ``...|probe|TASK``) whose recorded step is
        unique among the run's checkpoints becomes ``RUN|step:N|rank|RESOLVED``; the rows
        follow their unit. Units that end under one key are one: the latest kept, the rows of
        all moved to it. Every ``dataset`` spelling is resolved the same way; of two rows
        that are then one measurement, the newer stays.
        """
        meta = {r[0]: json.loads(r[1]) for r in conn.execute("SELECT key, value FROM meta")}
        resolve = _spelling_resolver(self.path)
        run_hint = meta.get("run") if isinstance(meta.get("run"), str) else None
        parsed: list[tuple[str, str, str, str, str, dict[str, Any], str]] = []
        for key, meta_json, finished in conn.execute(
                "SELECT key, meta, finished_at FROM units"):
            split = _split_unit_key(key, run_hint)
            if split is not None:
                parsed.append((key, *split, json.loads(meta_json or "{}"), finished))
        steps: dict[str, dict[str, Any]] = {}
        for _, run, name, _, _, unit_meta, _ in parsed:
            steps.setdefault(run, {})[name] = unit_meta.get("step")
        moves: dict[str, str] = {}
        for key, run, name, kind, what, unit_meta, _ in parsed:
            step = unit_meta.get("step")
            shared = list(steps[run].values()).count(step) > 1
            ident = f"step:{step}" if isinstance(step, int) and not shared else name
            target = (resolve(what) or what) if kind == "rank" else what
            new = f"{run}|{ident}|{kind}|{target}"
            if new != key:
                moves[key] = new
        latest: dict[str, tuple[str, str]] = {}
        for key, *_, finished in parsed:
            new = moves.get(key, key)
            if new not in latest or finished >= latest[new][1]:
                latest[new] = (key, finished)
        for old, new in moves.items():
            conn.execute("UPDATE results SET unit = ? WHERE unit = ?", (new, old))
        for new, (keep, _) in latest.items():
            if keep != new:
                conn.execute("DELETE FROM units WHERE key = ?", (new,))
                conn.execute("UPDATE units SET key = ? WHERE key = ?", (new, keep))
        for old in moves:
            if latest.get(old, ("", ""))[0] != old:
                conn.execute("DELETE FROM units WHERE key = ?", (old,))
        spellings = [r[0] for r in conn.execute("SELECT DISTINCT dataset FROM results")]
        same = " AND ".join(f"t.{c} = results.{c}" for c in (*IDENTITY_COLUMNS,
                                                               "conventions_hash")
                            if c != "dataset")
        for old in spellings:
            new = resolve(old)
            if new is None or new == old:
                continue
            conn.execute(f"DELETE FROM results WHERE dataset = ? AND EXISTS (SELECT 1 FROM "
                         f"results t WHERE t.dataset = ? AND {same} AND "
                         f"t.updated_at >= results.updated_at)", (old, new))
            conn.execute(f"DELETE FROM results WHERE dataset = ? AND EXISTS (SELECT 1 FROM "
                         f"results t WHERE t.dataset = ? AND {same})", (new, old))
            conn.execute("UPDATE results SET dataset = ? WHERE dataset = ?", (new, old))
        conn.execute("UPDATE units SET n_results = (SELECT COUNT(*) FROM results "
                     "WHERE results.unit = units.key)")
        config = meta.get("sweep_config")
        if isinstance(config, dict):
            if isinstance(config.get("rank_data"), str):
                config["rank_data"] = resolve(config["rank_data"]) or config["rank_data"]
            for probe in config.get("probes") or []:
                if isinstance(probe, dict) and isinstance(probe.get("data"), str):
                    probe["data"] = resolve(probe["data"]) or probe["data"]
            conn.execute("UPDATE meta SET value = ? WHERE key = 'sweep_config'",
                         (_to_json(config),))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    # ------------------------------------------------------------------ writing
    def add_rows(self, rows: Iterable[ResultRow]) -> int:
        """Upsert rows. Inside :meth:`unit` they join that unit's transaction; otherwise they
        are written at once in a transaction of their own. Returns the number of rows taken."""
        checked = [_check_row(r) for r in rows]
        if self._pending is not None:
            self._pending.rows.extend(checked)
            return len(checked)
        now = _now()
        params = [_row_params(r, None, now) for r in checked]
        with self._transaction() as conn:
            conn.executemany(_UPSERT, params)
        return len(checked)

    @contextlib.contextmanager
    def unit(self, key: str, *, meta: Mapping[str, Any] | None = None,
             seconds: float | None = None) -> Iterator[UnitWork]:
        """One unit of work, committed atomically when the block ends without an exception.

        Rows given to the yielded :class:`UnitWork` (or to :meth:`add_rows` while the block is
        open) are kept in memory; at the end they replace any rows an earlier run of the same
        key wrote and are committed together with the ``units`` row (status ``done``, start
        and finish time, wall time, ``meta``) in one transaction. An exception,
        ``KeyboardInterrupt`` or a killed process commits nothing. Rows added inside the block
        are not visible to :meth:`rows` until it ends. Units do not nest.

        ``seconds`` is the wall time of work done before the block (in a worker process,
        whose rows the block only writes): the unit's recorded wall time, ending now. Without
        it, the block's own time is the unit's.
        """
        if self._pending is not None:
            raise SpeechrankError(f"unit {key!r} opened inside unit {self._pending.key!r}")
        work = UnitWork(key=str(key), meta=dict(meta or {}))
        started_at, t0 = _now(), time.perf_counter()
        self._pending = work
        try:
            yield work
        finally:
            self._pending = None
        wall_s = time.perf_counter() - t0
        now = _now()
        if seconds is not None:
            wall_s = float(seconds)
            started_at = _now(-wall_s)
        params = [_row_params(r, work.key, now) for r in work.rows]
        meta_json = _to_json(work.meta)
        with self._transaction() as conn:
            conn.execute("DELETE FROM results WHERE unit = ?", (work.key,))
            conn.executemany(_UPSERT, params)
            conn.execute(
                "INSERT OR REPLACE INTO units (key, status, started_at, finished_at, wall_s, "
                "n_results, meta) VALUES (?, 'done', ?, ?, ?, ?, ?)",
                (work.key, started_at, now, wall_s, len(params), meta_json))

    def record_checkpoint(self, record: CheckpointRecord) -> None:
        """Store (or replace) what is known of one checkpoint of a run."""
        training = {str(k): float(v) for k, v in dict(record.training).items() if v is not None}
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints (run, checkpoint, path, format, step, "
                "digest, training, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (str(record.run), str(record.checkpoint), str(record.path), str(record.format),
                 None if record.step is None else int(record.step), record.digest,
                 _to_json(training), _now()))

    def claim_run(self, source: str, names: Iterable[str]) -> str:
        """The name of the run that ``source`` (a resolved path) stands for in this store:
        the one it was given before, else the first of ``names`` no other run holds (kept in
        ``meta['runs']``). A name recorded before runs were (a migrated store's) is free to
        the first run that asks for it."""
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'runs'").fetchone()
            runs = json.loads(row[0]) if row else {}
            for name, held in runs.items():
                if held == source:
                    return str(name)
            for name in names:
                if name not in runs:
                    runs[name] = source
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('runs', ?)",
                                 (_to_json(runs),))
                    return str(name)
        raise SpeechrankError(f"{self.path}: every name of run {source} is taken")

    def runs(self) -> dict[str, str]:
        """Each run's name and the resolved path it stands for."""
        return dict(self.get_meta("runs", {}))

    def forget_checkpoint(self, run: str, checkpoint: str) -> int:
        """Drop what was measured of one checkpoint of ``run`` (its rows and its units' done
        marks), so the next sweep measures it again; returns the rows dropped. For a file
        whose content changed since (a ``checkpoint_last.pt`` of a run that went on)."""
        with self._transaction() as conn:
            dropped = conn.execute("DELETE FROM results WHERE model = ? AND checkpoint = ?",
                                   (run, checkpoint)).rowcount
            for key, meta in conn.execute("SELECT key, meta FROM units").fetchall():
                if (key.startswith(run + "|")
                        and json.loads(meta or "{}").get("checkpoint") == checkpoint):
                    conn.execute("DELETE FROM results WHERE unit = ?", (key,))
                    conn.execute("DELETE FROM units WHERE key = ?", (key,))
        return int(dropped)

    def checkpoints(self, run: str | None = None) -> list[CheckpointRecord]:
        """The recorded checkpoints (of one ``run``, or of all), by run and training step."""
        query = "SELECT * FROM checkpoints"
        params: tuple[Any, ...] = ()
        if run is not None:
            query += " WHERE run = ?"
            params = (run,)
        records = [CheckpointRecord(run=r["run"], checkpoint=r["checkpoint"], path=r["path"],
                                    format=r["format"], step=r["step"], digest=r["digest"],
                                    training=json.loads(r["training"]))
                   for r in self._conn.execute(query, params)]
        records.sort(key=lambda c: (c.run, c.step is None, c.step or 0, c.checkpoint))
        return records

    def set_meta(self, key: str, value: Any) -> None:
        """Store sweep-level metadata (any JSON-serialisable value) under ``key``."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (str(key), _to_json(value)))

    # ------------------------------------------------------------------ reading
    def get_meta(self, key: str, default: Any = None) -> Any:
        """The metadata stored under ``key``, or ``default``."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def meta(self) -> dict[str, Any]:
        """All sweep-level metadata, by key."""
        return {r[0]: json.loads(r[1])
                for r in self._conn.execute("SELECT key, value FROM meta ORDER BY key")}

    def is_done(self, key: str) -> bool:
        """Whether the unit ``key`` was committed."""
        row = self._conn.execute("SELECT status FROM units WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] == "done"

    def content_digest(self) -> str:
        """SHA-256 of what the store holds, not of when it was written: every result row
        (identity, value, counts, conventions), every unit's key, status and row count, the
        recorded checkpoints and the metadata. Equal digests mean an analysis of the two
        stores sees the same thing (a rerun that only recorded its checkpoints again, or
        wrote the same rows again, keeps the digest)."""
        tables = {
            "results": "SELECT model, checkpoint, step, dataset, layer, pooling, metric, value, "
                       "n_rows, dim, task, split, domain, conventions FROM results ORDER BY "
                       "model, checkpoint, dataset, layer, pooling, metric, task, split, "
                       "domain, conventions_hash",
            "units": "SELECT key, status, n_results FROM units ORDER BY key",
            "checkpoints": "SELECT run, checkpoint, path, format, step, digest, training "
                           "FROM checkpoints ORDER BY run, checkpoint",
            "meta": "SELECT key, value FROM meta ORDER BY key",
        }
        digest = hashlib.sha256()
        for table, query in tables.items():
            digest.update(f"[{table}]\n".encode())
            for record in self._conn.execute(query):
                # repr keeps every float exact (NaN included); one line per row
                digest.update(repr(tuple(record)).encode() + b"\n")
        return digest.hexdigest()

    def units(self) -> list[UnitRecord]:
        """Every committed unit, in the order they finished."""
        out = []
        for r in self._conn.execute("SELECT * FROM units ORDER BY finished_at, rowid"):
            out.append(UnitRecord(key=r["key"], status=r["status"], started_at=r["started_at"],
                                  finished_at=r["finished_at"], wall_s=r["wall_s"],
                                  n_results=r["n_results"], meta=json.loads(r["meta"])))
        return out

    def rows(self, **filters: Any) -> list[ResultRow]:
        """Rows matching every filter, sorted by model, step, checkpoint, dataset, task, split,
        domain, metric, pooling and layer (``cnn, 0, 1, ...``).

        A filter is a column name (any :class:`ResultRow` field but ``conventions``, or
        ``unit``) with a value, or a list/tuple/set of accepted values; ``step=None`` matches
        rows without a step.
        """
        where, params = self._where(filters)
        query = "SELECT * FROM results" + where
        rows = [_row_from_db(r) for r in self._conn.execute(query, params)]
        rows.sort(key=_sort_key)
        return rows

    def count(self, **filters: Any) -> int:
        """Number of rows matching the filters of :meth:`rows`."""
        where, params = self._where(filters)
        return int(self._conn.execute("SELECT COUNT(*) FROM results" + where, params)
                   .fetchone()[0])

    def _where(self, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for name, wanted in filters.items():
            if name not in _FILTER_COLUMNS:
                raise SpeechrankError(
                    f"unknown filter {name!r}; use one of {', '.join(sorted(_FILTER_COLUMNS))}")
            if isinstance(wanted, (list, tuple, set, frozenset)):
                values = list(wanted)
                if not values:
                    clauses.append("0")
                    continue
                non_null = [v for v in values if v is not None]
                parts = []
                if non_null:
                    parts.append(f"{name} IN ({', '.join('?' * len(non_null))})")
                    params.extend(non_null)
                if len(non_null) < len(values):
                    parts.append(f"{name} IS NULL")
                clauses.append("(" + " OR ".join(parts) + ")")
            elif wanted is None:
                clauses.append(f"{name} IS NULL")
            else:
                clauses.append(f"{name} = ?")
                params.append(wanted)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    # ------------------------------------------------------------------ export
    def _export_records(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        records = []
        for row in self.rows(**filters):
            record = row.to_dict()
            record["conventions_hash"] = conventions_hash(row.conventions)
            record["conventions"] = _to_json(row.conventions)
            records.append(record)
        return records

    def to_csv(self, path: str | Path, **filters: Any) -> Path:
        """Write the (filtered) rows as CSV, one column per field, conventions as JSON text.

        A missing step is an empty cell; a NaN value is written ``nan``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(_EXPORT_COLUMNS))
            writer.writeheader()
            for record in self._export_records(filters):
                writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
        return path

    def to_parquet(self, path: str | Path, **filters: Any) -> Path:
        """Write the (filtered) rows as Parquet (needs ``pyarrow``: ``pip install pyarrow``)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SpeechrankError(
                "Parquet export needs pyarrow: pip install 'speechrank[parquet]'") from None
        schema = pa.schema([
            ("model", pa.string()), ("checkpoint", pa.string()), ("step", pa.int64()),
            ("dataset", pa.string()), ("layer", pa.string()), ("pooling", pa.string()),
            ("metric", pa.string()), ("value", pa.float64()), ("n_rows", pa.int64()),
            ("dim", pa.int64()), ("task", pa.string()), ("split", pa.string()),
            ("domain", pa.string()), ("conventions", pa.string()),
            ("conventions_hash", pa.string()),
        ])
        records = self._export_records(filters)
        table = pa.Table.from_pylist(records, schema=schema)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path
