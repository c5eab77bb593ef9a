"""IEMOCAP emotion recognition, four classes as in SUPERB (Busso et al., LREC 2008).

Layout: ``PATH/SessionN/sentences/wav/<dialog>/<utt>.wav`` and the evaluations
``PATH/SessionN/dialog/EmoEvaluation/<dialog>.txt``, whose summary lines read
``[start - end]<TAB><utt><TAB><emo><TAB>[V, A, D]``.

Labels: ``emotion`` among ``neu``, ``hap``, ``ang``, ``sad`` (``exc`` merged into ``hap``, as
SUPERB does; every other category is dropped and counted in ``info["dropped"]``),
``emotion_raw`` (the category as annotated), ``speaker`` (``Ses01F``: the session of the
utterance id and the gender letter of its last segment, so ``Ses01F_impro01_M000`` is
``Ses01M``), ``session`` (1-5) and ``dialog``.

Split (leave-one-session-out, option ``fold``, default 1): Session ``fold`` is test; of the
other sessions a seeded 20 % (option ``seed``, default 0), stratified by emotion, is dev and the
rest train, like SUPERB's random 20 % dev carve-out. Report the mean over folds 1-5 to compare
with published numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

from speechrank.audio.layouts._common import abspath, make_dataset, rel_uid, require_dir
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError

#: Annotated category -> class; categories not listed are dropped.
EMOTION_MAP: dict[str, str] = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang",
                               "sad": "sad"}
DEV_FRACTION = 0.2

_LINE = re.compile(r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+"
                   r"(?P<utt>Ses\d\d[FM]_\S+)\s+(?P<emo>\S+)\s+\[")
_SESSION = re.compile(r"^Session(\d+)$")


def utterance_speaker(utt: str) -> str:
    """``Ses01F_impro01_M000`` -> ``Ses01M``: the session and the speaking actor's gender."""
    return f"{utt[:5]}{utt.rsplit('_', 1)[-1][0]}"


def _sessions(path: Path) -> dict[int, Path]:
    sessions = {}
    for child in path.iterdir():
        match = _SESSION.match(child.name)
        if match and child.is_dir():
            sessions[int(match.group(1))] = child
    return dict(sorted(sessions.items()))


def _session_utterances(session: int, folder: Path, root: Path,
                        dropped: dict[str, int]) -> tuple[list[Utterance], int]:
    evaluations = sorted((folder / "dialog" / "EmoEvaluation").glob("*.txt"))
    utterances = []
    missing = 0
    for evaluation in evaluations:
        with evaluation.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                match = _LINE.match(line)
                if match is None:
                    continue
                raw = match["emo"]
                if raw not in EMOTION_MAP:
                    dropped[raw] = dropped.get(raw, 0) + 1
                    continue
                utt = match["utt"]
                dialog = utt.rsplit("_", 1)[0]
                file = folder / "sentences" / "wav" / dialog / f"{utt}.wav"
                if not file.is_file():
                    missing += 1
                    continue
                utterances.append(Utterance(
                    uid=rel_uid(file, root), path=abspath(file),
                    labels={"emotion": EMOTION_MAP[raw], "emotion_raw": raw,
                            "speaker": utterance_speaker(utt), "session": session,
                            "dialog": dialog}))
    return utterances, missing


def _dev_carve_out(rest: list[Utterance], seed: int) -> tuple[set[str], bool]:
    """Ids of a seeded ``DEV_FRACTION`` of ``rest``, stratified by emotion where possible."""
    from sklearn.model_selection import train_test_split

    if len(rest) < 2:
        return set(), False
    emotions = [u.labels["emotion"] for u in rest]
    try:
        _, dev = train_test_split(rest, test_size=DEV_FRACTION, random_state=seed,
                                  stratify=emotions)
        stratified = True
    except ValueError:  # a class with one utterance, or fewer dev slots than classes
        _, dev = train_test_split(rest, test_size=DEV_FRACTION, random_state=seed)
        stratified = False
    return {u.uid for u in dev}, stratified


def load(path: Path, spec: str, *, fold: int = 1, seed: int = 0) -> Dataset:
    """Read IEMOCAP's four-class emotion utterances with a leave-one-session-out split."""
    require_dir(path, "iemocap")
    sessions = _sessions(path)
    if not sessions:
        raise SpeechrankError(f"iemocap: no Session1..Session5 folders under {path}")
    if fold not in sessions:
        raise SpeechrankError(f"iemocap: fold={fold} needs Session{fold}, found "
                              f"{', '.join(f'Session{n}' for n in sessions)}")
    dropped: dict[str, int] = {}
    utterances: list[Utterance] = []
    missing = 0
    for number, folder in sessions.items():
        found, lost = _session_utterances(number, folder, path, dropped)
        utterances.extend(found)
        missing += lost
    utterances.sort(key=lambda u: u.uid)
    test = [u for u in utterances if u.labels["session"] == fold]
    rest = [u for u in utterances if u.labels["session"] != fold]
    dev_ids, stratified = _dev_carve_out(rest, seed)
    split_of = {u.uid: "test" for u in test}
    split_of.update({u.uid: "dev" if u.uid in dev_ids else "train" for u in rest})
    utterances = [Utterance(u.uid, u.path, u.labels, split_of[u.uid]) for u in utterances]
    return make_dataset(
        spec, "iemocap", path, utterances,
        labels=["emotion", "emotion_raw", "speaker", "session", "dialog"],
        label_source="dialog/EmoEvaluation/*.txt, exc merged into hap, 4 classes",
        split_source="corpus",
        split_rule=(f"fold {fold}: Session{fold} test; of the other sessions a seeded "
                    f"{DEV_FRACTION:.0%} stratified by emotion dev (seed {seed}), rest train"),
        fold=fold,
        seed=seed,
        dev_stratified=stratified,
        sessions=list(sessions),
        dropped=dict(sorted(dropped.items())),
        missing_audio=missing,
    )
