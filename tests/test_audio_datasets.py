"""DATA specs: directories, manifests and every corpus layout, on small fakes built in tmp_path."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechrank.audio import Dataset, load_audio, load_dataset
from speechrank.audio.datasets import known_formats, parse_spec, select_splits
from speechrank.audio.layouts.fsdd import fsdd_split
from speechrank.audio.layouts.iemocap import utterance_speaker
from speechrank.audio.layouts.speechcommands import hash_split, keyword12
from speechrank.errors import SpeechrankError


def wav(path: Path, seconds: float = 0.05, rate: int = 16_000, seed: int = 0) -> Path:
    """A short noise burst (distinct per seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).standard_normal(round(seconds * rate)) * 0.1
    sf.write(path, noise.astype(np.float32), rate)
    return path


def by_uid(dataset: Dataset) -> dict:
    return {u.uid: u for u in dataset.utterances}


def one_line_error(excinfo: pytest.ExceptionInfo[SpeechrankError]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# --- directories and single files -------------------------------------------------------


def test_directory_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    wav(tmp_path / "b" / "2.wav")
    wav(tmp_path / "b" / "10.FLAC")
    wav(tmp_path / "a.wav")
    wav(tmp_path / ".hidden" / "x.wav")
    wav(tmp_path / "b" / "._resource.wav")
    (tmp_path / "notes.txt").write_text("not audio")
    data = load_dataset(str(tmp_path))
    assert data.format == "directory"
    assert [u.uid for u in data.utterances] == ["a.wav", "b/10.FLAC", "b/2.wav"]
    assert all(u.labels == {} and u.split is None for u in data.utterances)
    assert data.info["split_source"] == "none"
    assert Path(data.utterances[0].path).is_absolute()
    assert load_audio(data.utterances[0].path, 16_000).size == 800


def test_directory_follows_links_without_looping(tmp_path: Path) -> None:
    wav(tmp_path / "real" / "x.wav")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    # Each directory is read once, under its first name in sorted order: no duplicates.
    assert [u.uid for u in load_dataset(tmp_path).utterances] == ["alias/x.wav"]


def test_directory_without_audio_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing")
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(tmp_path)
    assert "no audio files" in one_line_error(excinfo)
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(tmp_path / "nowhere")
    assert "does not exist" in one_line_error(excinfo)
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(tmp_path / "notes.txt")
    assert "neither a directory" in one_line_error(excinfo)


def test_single_audio_file(tmp_path: Path) -> None:
    data = load_dataset(wav(tmp_path / "one.wav"))
    assert data.format == "file" and [u.uid for u in data.utterances] == ["one.wav"]


# --- spec parsing -------------------------------------------------------------------------


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"timit:{tmp_path}")
    message = one_line_error(excinfo)
    for name in ("librispeech", "speechcommands", "voxceleb1", "iemocap", "fsdd", "synthetic"):
        assert name in message
    assert set(known_formats()) == {"librispeech", "speechcommands", "voxceleb1", "iemocap",
                                    "fsdd", "synthetic"}


def test_format_with_missing_or_empty_path(tmp_path: Path) -> None:
    for spec in (f"fsdd:{tmp_path / 'absent'}", "fsdd:"):
        with pytest.raises(SpeechrankError) as excinfo:
            load_dataset(spec)
        assert one_line_error(excinfo).startswith("fsdd:")


def test_existing_paths_are_literal(tmp_path: Path) -> None:
    odd = tmp_path / "fsdd:odd#split=test"
    wav(odd / "a.wav")
    data = load_dataset(str(odd))
    assert data.format == "directory" and len(data) == 1
    assert parse_spec(str(odd)).format is None


def test_options_are_parsed_and_checked(tmp_path: Path) -> None:
    spec = parse_spec("iemocap:/data/IEMOCAP#fold=2&seed=3")
    assert (spec.format, spec.path, dict(spec.options)) == (
        "iemocap", Path("/data/IEMOCAP"), {"fold": "2", "seed": "3"})
    wav(tmp_path / "a.wav")
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"{tmp_path}#fold=2")
    assert "not accepted" in one_line_error(excinfo)
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"iemocap:{tmp_path}#fold=two")
    assert "fold" in one_line_error(excinfo)


# --- manifests ------------------------------------------------------------------------------


def _manifest_audio(root: Path) -> None:
    for i, name in enumerate(("a.wav", "b.wav", "sub/c.wav", "d.wav")):
        wav(root / "audio" / name, seed=i)


def test_csv_manifest(tmp_path: Path) -> None:
    _manifest_audio(tmp_path)
    absolute = tmp_path / "audio" / "d.wav"
    (tmp_path / "m.csv").write_text(
        "path,speaker,keyword,split,start,end\n"
        "audio/a.wav,s1,yes,train,,\n"
        "audio/b.wav,s2,no,valid,,\n"
        "audio/sub/c.wav,s1,,Test,0.01,0.04\n"
        f"{absolute},s3,yes,,,\n", encoding="utf-8")
    data = load_dataset(tmp_path / "m.csv")
    assert data.format == "manifest" and data.info["split_source"] == "manifest"
    assert data.info["labels"] == ["speaker", "keyword"]
    utts = by_uid(data)
    assert list(utts) == ["audio/a.wav", "audio/b.wav", "audio/sub/c.wav@0.01-0.04",
                          str(absolute)]
    a, b, c, d = utts.values()
    assert a.labels == {"speaker": "s1", "keyword": "yes"} and a.split == "train"
    assert b.split == "dev" and c.split == "test" and d.split is None
    assert c.labels == {"speaker": "s1"} and (c.start, c.end) == (0.01, 0.04)
    assert a.path == str(tmp_path / "audio" / "a.wav")
    assert load_audio(c.path, 16_000, start=c.start, end=c.end).size == 480
    assert data.info["splits"] == {"train": 1, "dev": 1, "test": 1, "none": 1}


def test_tsv_manifest_with_ids(tmp_path: Path) -> None:
    _manifest_audio(tmp_path)
    (tmp_path / "m.tsv").write_text("id\tpath\temotion\nu1\taudio/a.wav\tneu\n"
                                    "u2\taudio/b.wav\tsad\n")
    data = load_dataset(tmp_path / "m.tsv")
    assert [(u.uid, u.labels) for u in data.utterances] == [
        ("u1", {"emotion": "neu"}), ("u2", {"emotion": "sad"})]
    assert data.info["split_source"] == "none"


def test_jsonl_manifest_keeps_types(tmp_path: Path) -> None:
    _manifest_audio(tmp_path)
    rows = [{"path": "audio/a.wav", "phones": [[0.0, 0.02, "a"], [0.02, 0.05, "b"]],
             "speaker": "s1", "split": "train", "n": 3},
            {"path": "audio/b.wav", "speaker": None, "uid": "second", "split": "validation"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    first, second = load_dataset(tmp_path / "m.jsonl").utterances
    assert first.labels["phones"] == [[0.0, 0.02, "a"], [0.02, 0.05, "b"]]
    assert first.labels["n"] == 3 and first.speaker == "s1"
    assert second.uid == "second" and second.labels == {} and second.split == "dev"


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("m.csv", "file,label\na.wav,x\n", "m.csv:1: no 'path' column (columns: file, label)"),
    ("m.csv", "path,label\na.wav,x,extra\n", "m.csv:2: 3 fields, the header has 2"),
    ("m.csv", "path,split\na.wav,fold1\n", "m.csv:2: split 'fold1' is not one of"),
    ("m.csv", "path,start,end\na.wav,2,1\n", "m.csv:2: end 1.0 is not after start 2.0"),
    ("m.csv", "path,start\na.wav,soon\n", "m.csv:2: start 'soon' is not a number"),
    ("m.csv", "path,x\n,1\n", "m.csv:2: missing or empty 'path'"),
    ("m.csv", "path,id\na.wav,u\nb.wav,u\n", "m.csv:3: utterance id 'u' already used on line 2"),
    ("m.csv", "", "m.csv: empty manifest"),
    ("m.tsv", "path\n", "m.tsv: manifest has no rows"),
    ("m.jsonl", '{"path": "a.wav"}\n{"path": \n', "m.jsonl:2: invalid JSON"),
    ("m.jsonl", '["a.wav"]\n', "m.jsonl:1: expected a JSON object, got list"),
])
def test_manifest_errors_name_file_and_line(tmp_path: Path, name: str, text: str,
                                            expected: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(tmp_path / name)
    assert expected in one_line_error(excinfo)


def test_manifest_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_bytes(b"path,label\na.wav,\xff\xfe\n")
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(tmp_path / "m.csv")
    assert "not UTF-8" in one_line_error(excinfo)


def test_split_option_selects(tmp_path: Path) -> None:
    _manifest_audio(tmp_path)
    (tmp_path / "m.csv").write_text("path,split\naudio/a.wav,train\naudio/b.wav,dev\n"
                                    "audio/d.wav,test\n")
    data = load_dataset(f"{tmp_path / 'm.csv'}#split=train,dev")
    assert [u.split for u in data.utterances] == ["train", "dev"]
    assert data.info["selected_splits"] == ["train", "dev"]
    assert [u.split for u in load_dataset(tmp_path / "m.csv", split="test").utterances] == [
        "test"]
    with pytest.raises(SpeechrankError):
        select_splits(data, "test")


# --- corpus layouts ---------------------------------------------------------------------------


def test_fsdd_fake_and_flat(tmp_path: Path) -> None:
    for name in ("3_alice_0.wav", "3_alice_7.wav", "4_bob_12.wav", "junk.wav"):
        wav(tmp_path / "recordings" / name)
    data = load_dataset(f"fsdd:{tmp_path}")
    assert [(u.uid, u.labels, u.split) for u in data.utterances] == [
        ("recordings/3_alice_0.wav", {"keyword": "3", "speaker": "alice"}, "test"),
        ("recordings/3_alice_7.wav", {"keyword": "3", "speaker": "alice"}, "dev"),
        ("recordings/4_bob_12.wav", {"keyword": "4", "speaker": "bob"}, "train")]
    assert data.info["ignored_files"] == 1 and data.info["split_source"] == "rule"
    flat = load_dataset(f"fsdd:{tmp_path / 'recordings'}")
    assert [u.uid for u in flat.utterances] == ["3_alice_0.wav", "3_alice_7.wav", "4_bob_12.wav"]
    assert [fsdd_split(i) for i in (0, 4, 5, 9, 10, 49)] == ["test"] * 2 + ["dev"] * 2 + [
        "train"] * 2


def test_fsdd_shared_copy(fsdd_root: Path) -> None:
    data = load_dataset(f"fsdd:{fsdd_root}")
    assert len(data) == 3000
    assert data.info["splits"] == {"train": 2400, "dev": 300, "test": 300}
    for split in ("train", "dev", "test"):
        members = [u for u in data.utterances if u.split == split]
        assert len({u.labels["speaker"] for u in members}) == 6
        assert len({u.labels["keyword"] for u in members}) == 10
    assert by_uid(data)["recordings/7_jackson_32.wav"].labels == {"keyword": "7",
                                                                 "speaker": "jackson"}


def _librispeech(root: Path) -> None:
    for subset, speaker, chapter in (("train-clean-100", "19", "198"),
                                     ("dev-clean", "84", "121123"), ("test-clean", "61", "70968"),
                                     ("extra", "7", "8")):
        folder = root / subset / speaker / chapter
        lines = []
        for n in range(2):
            utt = f"{speaker}-{chapter}-{n:04d}"
            wav(folder / f"{utt}.flac")
            lines.append(f"{utt} WORDS OF UTTERANCE {n}")
        lines.append(f"{speaker}-{chapter}-0009 NO AUDIO FOR THIS ONE")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")


def test_librispeech(tmp_path: Path) -> None:
    _librispeech(tmp_path / "LibriSpeech")
    data = load_dataset(f"librispeech:{tmp_path / 'LibriSpeech'}")
    assert data.info["splits"] == {"train": 2, "dev": 2, "test": 2, "none": 2}
    assert data.info["missing_audio"] == 4 and data.info["split_source"] == "corpus"
    utt = by_uid(data)["dev-clean/84/121123/84-121123-0001.flac"]
    assert utt.labels == {"speaker": "84", "chapter": "121123",
                          "transcript": "WORDS OF UTTERANCE 1", "subset": "dev-clean"}
    assert utt.split == "dev"
    one = load_dataset(f"librispeech:{tmp_path / 'LibriSpeech' / 'test-clean'}")
    assert [u.uid for u in one.utterances] == ["61/70968/61-70968-0000.flac",
                                               "61/70968/61-70968-0001.flac"]
    assert {u.split for u in one.utterances} == {"test"}


def test_librispeech_without_transcripts(tmp_path: Path) -> None:
    wav(tmp_path / "a.flac")
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"librispeech:{tmp_path}")
    assert "trans.txt" in one_line_error(excinfo)


def _speechcommands(root: Path, words: tuple[str, ...], lists: bool) -> None:
    speakers = ("0a7c2a8d", "1b4c9b89", "2c5d0c90", "3d6e1d91")
    for w, word in enumerate(words):
        for s, speaker in enumerate(speakers):
            for n in range(3):
                wav(root / word / f"{speaker}_nohash_{n}.wav", seconds=0.02, seed=w * 100 + s)
    for i, name in enumerate(("white_noise.wav", "running_tap.wav")):
        wav(root / "_background_noise_" / name, seconds=12.0, seed=1000 + i)
    (root / "_background_noise_" / "README.md").write_text("noise")
    if lists:
        (root / "validation_list.txt").write_text(
            "\n".join(f"{w}/{speakers[1]}_nohash_{n}.wav" for w in words for n in range(3)))
        (root / "testing_list.txt").write_text(
            "\n".join(f"{w}/{speakers[2]}_nohash_{n}.wav" for w in words for n in range(3)))


def test_speechcommands_v1_with_lists_and_silence(tmp_path: Path) -> None:
    words = ("yes", "no", "bed", "cat", "stop", "go")
    _speechcommands(tmp_path, words, lists=True)
    data = load_dataset(f"speechcommands:{tmp_path}")
    info = data.info
    assert info["version"] == "v0.01" and info["split_source"] == "corpus"
    # 36 train, 18 dev, 18 test word utterances; silence is 1/12 of each split.
    assert info["silence"]["crops"] == {"train": round(36 / 11), "dev": round(18 / 11),
                                        "test": round(18 / 11)}
    words_only = [u for u in data.utterances if u.labels["keyword"] != "_silence_"]
    assert Counter(u.split for u in words_only) == {"train": 36, "dev": 18, "test": 18}
    assert {u.labels["speaker"] for u in words_only if u.split == "dev"} == {"1b4c9b89"}
    cat = by_uid(data)["cat/0a7c2a8d_nohash_2.wav"]
    assert cat.labels == {"keyword": "cat", "keyword12": "_unknown_", "speaker": "0a7c2a8d"}
    assert by_uid(data)["stop/0a7c2a8d_nohash_2.wav"].labels["keyword12"] == "stop"
    silence = [u for u in data.utterances if u.labels["keyword12"] == "_silence_"]
    for utt in silence:
        assert utt.end - utt.start == pytest.approx(1.0)
        lo, hi = {"train": (0.0, 9.6), "dev": (9.6, 10.8), "test": (10.8, 12.0)}[utt.split]
        assert lo - 1e-9 <= utt.start and utt.end <= hi + 1e-9
        assert "speaker" not in utt.labels
        assert load_audio(utt.path, 16_000, start=utt.start, end=utt.end).size == 16_000
    again = load_dataset(f"speechcommands:{tmp_path}")
    assert again.utterances == data.utterances
    reseeded = load_dataset(f"speechcommands:{tmp_path}#seed=1")
    assert [u.start for u in reseeded.utterances] != [u.start for u in data.utterances]
    none = load_dataset(f"speechcommands:{tmp_path}#silence_fraction=0")
    assert len(none) == 72


def test_speechcommands_v2_hash_rule(tmp_path: Path) -> None:
    _speechcommands(tmp_path, ("yes", "backward"), lists=False)
    data = load_dataset(f"speechcommands:{tmp_path}#silence_fraction=0")
    assert data.info["version"] == "v0.02" and data.info["split_source"] == "rule"
    for utt in data.utterances:
        assert utt.split == hash_split(Path(utt.path).name)
    by_speaker = {}
    for utt in data.utterances:
        by_speaker.setdefault(utt.labels["speaker"], set()).add(utt.split)
    assert all(len(splits) == 1 for splits in by_speaker.values())
    assert keyword12("backward") == "_unknown_" and keyword12("yes") == "yes"


def test_speechcommands_hash_rule_proportions() -> None:
    rng = np.random.default_rng(0)
    names = [f"{rng.integers(2**32):08x}_nohash_0.wav" for _ in range(4000)]
    counts = Counter(hash_split(n) for n in names)
    assert 0.08 < counts["dev"] / 4000 < 0.12 and 0.08 < counts["test"] / 4000 < 0.12


def test_speechcommands_one_list_only(tmp_path: Path) -> None:
    _speechcommands(tmp_path, ("yes",), lists=True)
    (tmp_path / "testing_list.txt").unlink()
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"speechcommands:{tmp_path}")
    assert "validation_list.txt but not testing_list.txt" in one_line_error(excinfo)


def _voxceleb(root: Path, split_name: str, separate: bool) -> list[str]:
    entries = []
    for s, speaker in enumerate(("id10001", "id10002", "id10270")):
        base = root / ("test" if speaker == "id10270" else "dev") / "wav" if separate else (
            root / "wav")
        for v, video in enumerate(("1zcIwhmdeo4", "7gWzIy6yIIk")):
            for n in (1, 2):
                rel = f"{speaker}/{video}/{n:05d}.wav"
                wav(base / rel, seed=s * 10 + v * 2 + n)
                entries.append(f"{1 + (v * 2 + n) % 3} {rel}")
    entries.append("3 id10001/missing/00001.wav")
    (root / split_name).write_text("\n".join(entries) + "\n")
    return entries


@pytest.mark.parametrize(("split_name", "separate"), [("iden_split.txt", False),
                                                      ("veri_test_class.txt", True)])
def test_voxceleb1(tmp_path: Path, split_name: str, separate: bool) -> None:
    entries = _voxceleb(tmp_path, split_name, separate)
    data = load_dataset(f"voxceleb1:{tmp_path}")
    assert len(data) == 12 and data.info["missing_audio"] == 1
    expected = {rel: {"1": "train", "2": "dev", "3": "test"}[code]
                for code, rel in (e.split() for e in entries[:-1])}
    assert {u.uid: u.split for u in data.utterances} == expected
    utt = by_uid(data)["id10270/7gWzIy6yIIk/00002.wav"]
    assert utt.labels == {"speaker": "id10270", "video": "7gWzIy6yIIk"}
    assert Path(utt.path).is_file()


def test_voxceleb1_without_split_file(tmp_path: Path) -> None:
    _voxceleb(tmp_path, "iden_split.txt", separate=False)
    (tmp_path / "iden_split.txt").unlink()
    data = load_dataset(f"voxceleb1:{tmp_path}")
    assert len(data) == 12 and data.info["split_source"] == "none"
    assert {u.split for u in data.utterances} == {None}


def test_voxceleb1_bad_split_line(tmp_path: Path) -> None:
    _voxceleb(tmp_path, "iden_split.txt", separate=False)
    with (tmp_path / "iden_split.txt").open("a") as handle:
        handle.write("4 id10001/x/00001.wav\n")
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"voxceleb1:{tmp_path}")
    assert "iden_split.txt:14:" in one_line_error(excinfo)


_EMOTIONS = ("neu", "hap", "exc", "ang", "sad", "fru", "xxx")


def _iemocap(root: Path, sessions: int = 2) -> None:
    for session in range(1, sessions + 1):
        folder = root / f"Session{session}"
        for kind in ("impro01", "script01_1"):
            dialog = f"Ses0{session}F_{kind}"
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for n, emotion in enumerate(_EMOTIONS * 2):
                utt = f"{dialog}_{'FM'[n % 2]}{n:03d}"
                wav(folder / "sentences" / "wav" / dialog / f"{utt}.wav", seed=n)
                lines.append(f"[{n}.0100 - {n}.9000]\t{utt}\t{emotion}\t[2.5000, 3.0000, 2.0000]")
                lines.append(f"C-E1:\t{emotion.title()};\t()")
            evaluation = folder / "dialog" / "EmoEvaluation"
            evaluation.mkdir(parents=True, exist_ok=True)
            (evaluation / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (folder / "dialog" / "EmoEvaluation" / "Categorical").mkdir()


def test_iemocap(tmp_path: Path) -> None:
    _iemocap(tmp_path)
    data = load_dataset(f"iemocap:{tmp_path}")
    info = data.info
    assert info["fold"] == 1 and info["dropped"] == {"fru": 8, "xxx": 8}
    assert len(data) == 2 * 2 * 2 * 5
    assert {u.labels["emotion"] for u in data.utterances} == {"neu", "hap", "ang", "sad"}
    utt = by_uid(data)["Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F002.wav"]
    assert utt.labels == {"emotion": "hap", "emotion_raw": "exc", "speaker": "Ses01F",
                          "session": 1, "dialog": "Ses01F_impro01"}
    assert {u.split for u in data.utterances if u.labels["session"] == 1} == {"test"}
    rest = [u for u in data.utterances if u.labels["session"] == 2]
    assert Counter(u.split for u in rest) == {"train": 16, "dev": 4}
    assert info["dev_stratified"] is True
    assert {u.labels["speaker"] for u in data.utterances} == {"Ses01F", "Ses01M", "Ses02F",
                                                             "Ses02M"}
    fold2 = load_dataset(f"iemocap:{tmp_path}#fold=2")
    assert {u.split for u in fold2.utterances if u.labels["session"] == 2} == {"test"}
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"iemocap:{tmp_path}#fold=5")
    assert "Session5" in one_line_error(excinfo)
    assert utterance_speaker("Ses03M_script02_2_F014") == "Ses03F"


def _synthetic(root: Path) -> None:
    """The manifests `speechrank corpus` writes: main groups, held-out speakers, a 2nd language."""
    groups = {"pretrain": ["pretrain"] * 3, "train": ["train"] * 2, "dev": ["dev"],
              "test": [None], "test_unseen": ["test_unseen"] * 2,
              "ood_de": ["train", "dev", "test"]}
    for name, splits in groups.items():
        rows = []
        for i, split in enumerate(splits):
            rel = f"wav/{name}/{i:04d}.wav"
            wav(root / rel, seed=i)
            rows.append({"path": rel, "speaker": f"v{i % 2}", "kind": "keyword",
                         "keyword": "ja" if name == "ood_de" else "yes",
                         "transcript": "yes", "language": "de" if name == "ood_de" else "en",
                         "phones": [[0.0, 0.02, "j"], [0.02, 0.05, "E"]],
                         **({"split": split} if split else {})})
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "corpus.json").write_text("{}")


def test_synthetic(tmp_path: Path) -> None:
    _synthetic(tmp_path)
    data = load_dataset(f"synthetic:{tmp_path}")
    assert data.info["splits"] == {"pretrain": 3, "train": 2, "dev": 1, "test": 1}
    assert data.info["manifests"] == ["pretrain", "train", "dev", "test"]
    assert data.info["other_manifests"] == ["ood_de", "test_unseen"]
    assert data.info["split_source"] == "manifest"
    assert {"speaker", "keyword", "phones", "language", "kind", "manifest"} <= set(
        data.info["labels"])
    utt = by_uid(data)["wav/test/0000.wav"]  # no split column: taken from the file name
    assert utt.split == "test" and utt.labels["phones"][1] == [0.02, 0.05, "E"]
    assert utt.labels["manifest"] == "test"
    assert load_dataset(f"synthetic:{tmp_path}#split=pretrain").info["n_utterances"] == 3


def test_synthetic_other_manifests(tmp_path: Path) -> None:
    _synthetic(tmp_path)
    unseen = load_dataset(f"synthetic:{tmp_path}#manifest=test_unseen")
    assert [(u.split, u.labels["manifest"]) for u in unseen.utterances] == [
        ("test", "test_unseen")] * 2
    german = load_dataset(f"synthetic:{tmp_path}#manifest=ood_de")
    assert [u.split for u in german.utterances] == ["train", "dev", "test"]
    assert {u.labels["language"] for u in german.utterances} == {"de"}
    both = load_dataset(f"synthetic:{tmp_path}", manifest="train,test_unseen")
    assert both.info["splits"] == {"train": 2, "test": 2}
    assert len(load_dataset(f"synthetic:{tmp_path}#manifest=all")) == 12
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"synthetic:{tmp_path}#manifest=ood_fr")
    assert "no manifest ood_fr" in one_line_error(excinfo)
    with pytest.raises(SpeechrankError) as excinfo:
        load_dataset(f"synthetic:{tmp_path / 'wav'}")
    assert "no *.jsonl manifests" in one_line_error(excinfo)


def test_synthetic_real_corpus(tmp_path: Path) -> None:
    """A real (tiny) corpus from the synthetic generator, where eSpeak NG is available."""
    synthetic = pytest.importorskip("speechrank.audio.synthetic")
    try:
        spec = synthetic.CorpusSpec(minutes=0.5, languages=("en",))
        synthetic.make_corpus(tmp_path / "c", spec, workers=1, progress=False)
    except (OSError, SpeechrankError) as err:  # pragma: no cover - no eSpeak here
        pytest.skip(f"cannot synthesise: {err}")
    data = load_dataset(f"synthetic:{tmp_path / 'c'}")
    assert set(data.info["splits"]) == {"pretrain", "train", "dev", "test"}
    assert all(Path(u.path).is_file() for u in data.utterances)
    utt = data.utterances[0]
    assert load_audio(utt.path, 16_000).size > 0
    assert isinstance(utt.labels["phones"], list) and utt.speaker
