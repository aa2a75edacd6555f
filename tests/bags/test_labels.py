"""Label readers: the real AFEW-VA JSON, Aff-Wild2, CSV, AffectNet labels.csv and FER2013 in their
published formats, and the one rule for missing and out-of-range values (module docstring of
ros2_affect.bags.labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from ros2_affect.bags.labels import (
    EXPRESSION_ALIASES,
    KNOWN_EXPRESSIONS,
    OTHER,
    LabelError,
    canonical_expression,
    expression_name,
    find_affwild2_labels,
    load_afew_va,
    load_affwild2,
    load_csv,
    load_labels,
    write_csv,
)
from ros2_affect.bags.photos import FER2013_CSV_CODES, FER2013_FOLDERS, fer2013_folder_images, read_affectnet_photos


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
        "frame,valence\n1,high\n": r"line 2: valence = 'high' is not a number",
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


# -- one rule for every format: the format's marker is "missing", anything else invalid raises --

AFFWILD2 = Path(__file__).resolve().parents[1] / "fixtures" / "affwild2" / "annotations"


def test_affwild2_release_tree_markers_and_out_of_range(tmp_path: Path) -> None:
    expr = AFFWILD2 / "EXPR_Set" / "Train_Set" / "video1.txt"
    va = AFFWILD2 / "VA_Set" / "Train_Set" / "video1.txt"
    assert find_affwild2_labels(tmp_path / "video1", [AFFWILD2]) == (expr, va)
    with pytest.raises(LabelError, match=r"video1.txt line 5: valence = 1.5 is outside the accepted range \[-1, 1\]"):
        load_affwild2(expr, va)
    fixed = tmp_path / "va.txt"
    fixed.write_text(va.read_text().replace("1.5,0.2", "1.0,0.2").replace("0.3,-0.1", "0.3,-5"))
    labels = load_affwild2(expr, fixed)
    rows = {a.frame_index: (a.expression, a.valence, a.arousal) for a in labels.annotations}
    # frame 0: EXPR -1 and VA -5,-5: no annotation at all; frame 4: "Other" with VA
    assert 0 not in rows and rows[1] == ("neutral", 0.1, 0.2) and rows[3] == ("happy", 1.0, 0.2)
    assert rows[4] == (None, -0.25, 0.5) and rows[7] == ("anger", None, None)
    assert rows[8] == ("disgust", 0.3, None)  # each value on its own: -5 arousal is missing, valence kept


def test_the_same_value_rule_in_every_format(tmp_path: Path) -> None:
    afew = tmp_path / "clip.json"
    csv_file = tmp_path / "labels.csv"
    va = tmp_path / "va.txt"
    photos = tmp_path / "photos.csv"
    # exactly on the range's ends: accepted
    afew.write_text('{"frames": {"00000": {"valence": -10, "arousal": 10}}}')
    csv_file.write_text("frame,valence,arousal\n0,-1,1\n")
    va.write_text("valence,arousal\n-1,1\n")
    photos.write_text("image,expression,valence,arousal\na.jpg,happy,-1,1\n")
    assert [(a.valence, a.arousal) for a in load_afew_va(afew).annotations] == [(-1.0, 1.0)]
    assert [(a.valence, a.arousal) for a in load_csv(csv_file).annotations] == [(-1.0, 1.0)]
    assert [(a.valence, a.arousal) for a in load_affwild2(va_path=va).annotations] == [(-1.0, 1.0)]
    assert [(r.valence, r.arousal) for r in read_affectnet_photos(photos)] == [(-1.0, 1.0)]
    # an error naming file, line (or frame) and value, in every format
    read_va = lambda path: load_affwild2(va_path=path)  # noqa: E731
    cases = [
        # just outside the range
        (afew, '{"frames": {"00000": {"valence": -10.5, "arousal": 0}}}', load_afew_va,
         r"clip.json frame '00000': valence = -10.5 is outside"),
        (csv_file, "frame,valence,arousal\n0,0,1.01\n", load_csv, r"labels.csv line 2: arousal = 1.01 is outside"),
        (va, "valence,arousal\n-1.01,0\n", read_va, r"va.txt line 2: valence = -1.01 is outside"),
        (photos, "image,expression,valence,arousal\na.jpg,happy,0,-1.01\n", read_affectnet_photos,
         r"photos.csv line 2: arousal = -1.01 is outside"),
        # another format's marker is just a bad value: -2 in Aff-Wild2, -5 in AffectNet
        (va, "valence,arousal\n-2,0\n", read_va, r"va.txt line 2: valence = -2.0 is outside"),
        (photos, "image,expression,valence,arousal\na.jpg,happy,-5,0\n", read_affectnet_photos,
         r"photos.csv line 2: valence = -5.0 is outside"),
        # an empty cell where the format has no empty value, and not a number
        (va, "valence,arousal\n0.1,\n", read_va, r"va.txt line 2: expected 'valence,arousal'"),
        (photos, "image,expression,valence,arousal\na.jpg,happy,x,\n", read_affectnet_photos,
         r"photos.csv line 2: valence = 'x' is not a number"),
    ]
    for path, text, read, message in cases:
        path.write_text(text)
        with pytest.raises(LabelError, match=message):
            read(path)


def test_affectnet_photo_table_markers(tmp_path: Path) -> None:
    photos = tmp_path / "labels.csv"
    photos.write_text(
        " image , expression ,valence,arousal,landmarks_xy\n"
        "a.jpg,1,-2,0.5,\n"  # code 1 = happy; -2: valence not annotated
        "b.jpg,,,,\n"  # empty cells: nothing annotated
        "c.jpg,No-Face,-2,-2,\n"  # AffectNet's not-an-expression categories: no expression label
        "d.jpg,contemptuous,0.1,0.2," + " ".join(["1.5"] * 136) + "\n"
    )
    rows = read_affectnet_photos(photos)
    assert [(r.line, r.image, r.expression, r.valence, r.arousal) for r in rows] == [
        (2, "a.jpg", "happy", None, 0.5),
        (3, "b.jpg", None, None, None),
        (4, "c.jpg", None, None, None),
        (5, "d.jpg", "contempt", 0.1, 0.2),
    ]
    assert rows[0].landmarks is None and rows[3].landmarks.shape == (68, 2)


def test_one_class_name_table() -> None:
    assert expression_name("Joy") == "happy" and expression_name("contemptuous") == "contempt"
    assert expression_name("Other") == OTHER and canonical_expression("Other", "x") is None
    assert EXPRESSION_ALIASES["angry"] == "anger"
    assert set(EXPRESSION_ALIASES.values()) == set(KNOWN_EXPRESSIONS) | {OTHER}
    assert FER2013_FOLDERS == {
        "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happy",
        "neutral": "neutral", "sad": "sad", "surprise": "surprise",
    }
    assert FER2013_CSV_CODES == ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    with pytest.raises(LabelError, match=r"f.txt line 2: unknown expression 'contempt'; accepted: neutral.*anger \("):
        expression_name("contempt", "f.txt line 2", KNOWN_EXPRESSIONS[:-1])
    with pytest.raises(LabelError, match=r"did you mean 'happiness'"):
        expression_name("hapiness")


def test_fer2013_folders(tmp_path: Path) -> None:
    for name in ("happy", "Angry"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "1.jpg").write_bytes(b"")
        (tmp_path / name / "notes.txt").write_text("x")
    expected = [(tmp_path / "Angry" / "1.jpg", "anger"), (tmp_path / "happy" / "1.jpg", "happy")]
    assert fer2013_folder_images(tmp_path) == expected
    (tmp_path / "bored").mkdir()
    with pytest.raises(LabelError, match=r"Unknown FER2013 class folder .*bored; accepted: angry, disgust"):
        fer2013_folder_images(tmp_path)
