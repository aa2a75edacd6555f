"""Annotated output: the valence/arousal inset has axis names and the values; videos are written
in a codec browsers play (H.264 or VP9) where the installed OpenCV can encode one."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from ros2_affect.config import PipelineConfig
from ros2_affect.core.pipeline import create_pipeline
from ros2_affect.core.types import Frame
from ros2_affect.draw import VIDEO_CODECS, annotate, open_video_writer, va_marker_size
from ros2_affect.tools.cli import main
from ros2_affect.tools.inputs import open_input


def test_va_inset_has_axis_names_and_values() -> None:
    with open_input("sample") as source:
        frame = next(iter(source))
    with create_pipeline(PipelineConfig(), tracker_seed=0) as pipeline:
        result = pipeline.process(Frame(frame.image, frame.stamp_ns, "sample"))
    (face,) = result.faces
    assert face.affect is not None
    canvas = annotate(frame.image, result)
    x1, y1, x2, _ = (int(round(float(v))) for v in face.detection.bbox_xyxy_px)
    side = max(24, int(round(48 * max(0.4, 480 / 720))))
    width, height = va_marker_size(side, max(0.3, 0.4 * max(0.4, 480 / 720)))
    assert height > side + 10, "room for two lines of numbers under the square"
    band = canvas[y1 + side + 2:y1 + height, x2 + 4:x2 + 4 + width]
    # light text (the values) on the dark band, where the plain photo had neither
    assert (band.min(axis=2) > 150).sum() > 10 and (band.max(axis=2) < 40).sum() > 50
    square = canvas[y1:y1 + side, x2 + 4:x2 + 4 + side]
    assert (square.min(axis=2) > 120).sum() > 4, "axis names V and A in the square"


def test_annotated_video_codec(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", "sample", "--out", str(out), "--model-kind", "none", "--max-frames", "4"]) == 0
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    fourcc = int(video.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
    frames = 0
    while video.read()[0]:
        frames += 1
    video.release()
    assert frames == 4
    playable = []
    for name in ("h264", "vp9"):
        try:
            writer, _ = open_video_writer(tmp_path / f"probe_{name}.mp4", 10, (64, 48), name)
            writer.release()
            playable.append(VIDEO_CODECS[name][0])
        except Exception:
            continue
    if not playable:
        pytest.skip("this OpenCV build encodes neither H.264 nor VP9 (the video is MPEG-4 Part 2, with a warning)")
    # H.264 when the build has it, else VP9 (OpenCV reads VP9 back as VP90)
    wanted = {"avc1", "h264"} if "avc1" in playable else {"vp09", "vp90"}
    assert fourcc.lower() in wanted, f"annotated.mp4 is {fourcc!r}, not a codec browsers play"
