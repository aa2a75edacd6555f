"""Annotation loaders: the real AFEW-VA JSON, Aff-Wild2 and CSV files in their published formats."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from ros2_affect.bags.labels import (
    LabelError,
    canonical_expression,
    load_afew_va,
    load_affwild2,
    load_csv,
    load_labels,
    write_csv,
)


def test_afew_va_json_from_file_or_clip_folder(afew_clip_dir: Path, afew_annotation: Dict) -> None:
    labels = load_afew_va(afew_clip_dir / "001.json")
    assert load_afew_va(afew_clip_dir) == labels == load_labels(afew_clip_dir / "001.json")
    assert (labels.dataset, len(labels), labels.meta) == ("afew-va", 42, {"actor": "Bruce Campbell", "video_id": "001"})
    assert [a.frame_index for a in labels.annotations] == list(range(42))
    for a in labels.annotations:
        entry = afew_annotation["frames"][f"{a.frame_index:05d}"]
        assert (a.valence, a.arousal) == (entry["valence"] / 10, entry["arousal"] / 10)
    assert labels.has_valence_arousal and not labels.has_expression


def test_afew_va_errors(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"frames": {"00000": {"valence": 12, "arousal": 0}}}')
    with pytest.raises(LabelError, match=r"frame '00000': valence = 12 is outside the accepted range \[-10, 10\]"):
        load_afew_va(bad)
    bad.write_text('{"video_id": "001"}')
    with pytest.raises(LabelError, match=r"not an AFEW-VA annotation: expected a JSON object with a 'frames'"):
        load_afew_va(bad)
    bad.write_text("{")
    with pytest.raises(LabelError, match=r"is not valid JSON"):
        load_afew_va(bad)


def test_affwild2_expr_and_va(tmp_path: Path) -> None:
    expr = tmp_path / "expr.txt"
    expr.write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n0\n1\n-1\n6\n7\n")
    va = tmp_path / "va.txt"
    va.write_text("valence,arousal\n0.1,-0.2\n-5,-5\n0.3,0.4\n")
    labels = load_affwild2(expr, va)
    rows = [(a.frame_index, a.expression, a.valence, a.arousal) for a in labels.annotations]
    assert rows == [
        (0, "neutral", 0.1, -0.2),
        (1, "anger", None, None),
        (2, None, 0.3, 0.4),
        (3, "surprise", None, None),
    ]
    # "Other" (frame 4) is outside the canonical classes: kept as unlabelled, so left out
    assert load_labels(va).dataset == "aff-wild2" and len(load_labels(expr)) == 3
    expr.write_text("Neutral,Anger\n0\n5\n")
    with pytest.raises(LabelError, match=r"expr.txt line 3: class index 5 is out of range 0..1"):
        load_affwild2(expr)
    va.write_text("valence,arousal\n0.1\n")
    with pytest.raises(LabelError, match=r"va.txt line 2: expected 'valence,arousal'"):
        load_affwild2(va_path=va)
    with pytest.raises(LabelError, match=r"need an EXPR and/or a VA annotation"):
        load_affwild2()


def test_csv_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("# comment\nFrame,Track,Expression,Valence,Arousal\n3,f3k9a,Happiness,0.5,\n1,,surprised,,-0.5\n")
    labels = load_csv(path)
    assert [(a.frame_index, a.face_id, a.expression, a.valence, a.arousal) for a in labels.annotations] == [
        (1, "", "surprise", None, -0.5),
        (3, "f3k9a", "happy", 0.5, None),
    ]
    write_csv(labels.annotations, tmp_path / "again.csv")
    assert load_csv(tmp_path / "again.csv").annotations == labels.annotations
    cases = {
        "frame,mood\n1,x\n": r"unknown column\(s\) \['mood'\]; accepted: frame, stamp_ns, face",
        "expression\nhappy\n": r"needs a 'frame' or a 'stamp_ns' column",
        "frame,valence\n1,0.5,3\n": r"line 2: 3 cells for 2 columns",
        "frame,valence\nx,0.5\n": r"line 2: column 'frame' = 'x' is not a valid int",
        "frame,valence\n1,2.0\n": r"line 2: valence = 2.0 is outside the accepted range \[-1, 1\]",
        "frame,valence\n-1,0.5\n": r"line 2: frame = -1 is negative",
        "frame,stamp_ns,valence\n,,0.5\n": r"line 2: neither 'frame' nor 'stamp_ns' is set",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(LabelError, match=message):
            load_csv(path)


def test_expression_names() -> None:
    assert canonical_expression(" Angry ", "x") == "anger" and canonical_expression("other", "x") is None
    with pytest.raises(LabelError, match=r"here: unknown expression 'bored'; accepted: neutral, happy, sad"):
        canonical_expression("bored", "here")


def test_unknown_label_files(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r"do not exist; pass a \.csv, an AFEW-VA \.json or an Aff-Wild2 \.txt"):
        load_labels(tmp_path / "missing.csv")
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_text("x")
    with pytest.raises(LabelError, match=r"is a bag; label topics are read from bags"):
        load_labels(tmp_path / "bag")


def test_unreadable_annotation_files_are_named(tmp_path: Path) -> None:
    """All loaders read files the same way: missing, a folder, or not UTF-8 is a LabelError naming the file."""
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("valence,arousal\n0.1,0.2 # caf\xe9\n".encode("latin-1"))
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(LabelError, match=r"AFEW-VA annotation '.*nope\.json' does not exist"):
        load_afew_va(tmp_path / "nope.json")
    with pytest.raises(LabelError, match=r"Aff-Wild2 VA file '.*latin1\.txt' is not UTF-8 text"):
        load_affwild2(va_path=latin1)
    with pytest.raises(LabelError, match=r"Aff-Wild2 EXPR file '.*nope\.txt' does not exist"):
        load_affwild2(tmp_path / "nope.txt")
    with pytest.raises(LabelError, match=r"annotation CSV '.*folder\.csv' is a folder; pass the annotation file"):
        load_csv(tmp_path / "folder.csv")
    with pytest.raises(LabelError, match=r"annotation CSV '.*latin1\.txt' is not UTF-8 text"):
        load_csv(latin1)
    latin1.write_text("\n\n")
    with pytest.raises(LabelError, match=r"Aff-Wild2 VA file '.*latin1\.txt' is empty"):
        load_affwild2(va_path=latin1)
