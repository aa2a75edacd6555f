"""The one image-message path of node, replay and bench: msgs.frame_processor on real frames."""

from __future__ import annotations

import logging
from typing import Any, List

import numpy as np
import pytest

from ros2_affect.config import ModelConfig, PipelineConfig
from ros2_affect.core.pipeline import create_pipeline
from ros2_affect.errors import InvalidImageError
from ros2_affect.msgs.frame_processor import FrameProcessor, decode_image_msg, is_compressed
from ros2_affect.msgs.messages import stamp_ns_of
from ros2_affect.msgs.msg_types import create_typestore
from ros2_affect.tools.bench import MessageKit


@pytest.fixture(scope="module")
def kit() -> MessageKit:
    return MessageKit("rgb8")


@pytest.fixture
def processor(kit: MessageKit) -> Any:
    with create_pipeline(PipelineConfig(model=ModelConfig(kind="none"))) as pipeline:
        yield FrameProcessor(pipeline, kit.out)


def _camera_info(kit: MessageKit, width: int, height: int) -> Any:
    t = create_typestore("humble").types
    f = 0.9 * width
    return t["sensor_msgs/msg/CameraInfo"](
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="cam"),
        height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.array([f, 0, width / 2, 0, f, height / 2, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
        p=np.array([f, 0, width / 2, 0, 0, f, height / 2, 0, 0, 0, 1, 0.0]), binning_x=0, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def test_header_kept_bit_exact_and_one_face_tracked(processor: Any, kit: MessageKit, afew_frames: List[Any]) -> None:
    ids = set()
    for i, frame in enumerate(afew_frames[:6]):
        msg = kit.image(frame, 1_700_000_000_123_456_789 + i * 40_000_000, "cam_optical")
        out = processor.process(msg)
        assert out.faces_msg.header is msg.header and out.stamp_from_header
        assert out.result.stamp_ns == stamp_ns_of(msg.header.stamp)
        assert len(out.faces_msg.faces) == 1 and out.camera_problem == ""
        assert out.rgb.shape == frame.shape and out.decode_ms >= 0
        ids.add(out.faces_msg.faces[0].track_id)
    assert len(ids) == 1


def test_zero_header_stamp_takes_the_fallback_and_backwards_time_restarts_tracks(
    processor: Any, kit: MessageKit, afew_frames: List[Any], caplog: pytest.LogCaptureFixture
) -> None:
    zero = kit.image(afew_frames[0], 0)
    out = processor.process(zero, fallback_stamp_ns=5_000_000_000)
    assert not out.stamp_from_header and stamp_ns_of(out.faces_msg.header.stamp) == 5_000_000_000
    first_id = out.faces_msg.faces[0].track_id
    for i in range(1, 4):
        processor.process(kit.image(afew_frames[i], 5_000_000_000 + i * 40_000_000))
    with caplog.at_level(logging.WARNING, logger="ros2_affect"):
        again = processor.process(kit.image(afew_frames[4], 1_000_000_000))  # a bag looping
    assert processor.time_jumps == 1
    assert "time went backwards (stamp 1000000000 ns < previous 5120000000 ns)" in caplog.text
    assert again.faces_msg.faces[0].track_id != first_id  # tracks restarted, not matched across the jump


def test_camera_info_gives_rays_and_a_mismatched_one_says_why(
    processor: Any, kit: MessageKit, afew_frames: List[Any]
) -> None:
    height, width = afew_frames[0].shape[:2]
    good = processor.process(kit.image(afew_frames[0], 10**9), _camera_info(kit, width, height))
    assert good.camera_problem == "" and good.faces_msg.faces[0].has_direction
    bad = processor.process(kit.image(afew_frames[1], 2 * 10**9), _camera_info(kit, 1280, 960))
    assert "describes a 1280x960 image" in bad.camera_problem and not bad.faces_msg.faces[0].has_direction
    told = processor.process(kit.image(afew_frames[2], 3 * 10**9), None, camera_problem="no camera_info received yet")
    assert told.camera_problem == "no camera_info received yet"


def test_an_undecodable_message_raises_and_leaves_the_state_alone(
    processor: Any, kit: MessageKit, afew_frames: List[Any]
) -> None:
    processor.process(kit.image(afew_frames[0], 2 * 10**9))
    broken = kit.image(afew_frames[1], 10**9)  # earlier stamp, but it never gets that far
    broken.step = broken.width * 3 - 1
    with pytest.raises(InvalidImageError, match="step"):
        processor.process(broken)
    assert processor.time_jumps == 0


def test_decode_dispatch_by_message_type(kit: MessageKit, afew_frames: List[Any]) -> None:
    raw = kit.image(afew_frames[0], 1)
    jpeg = MessageKit("jpeg").image(afew_frames[0], 1)
    assert not is_compressed(raw) and is_compressed(jpeg)
    assert np.array_equal(decode_image_msg(raw), afew_frames[0])
    assert np.abs(decode_image_msg(jpeg).astype(int) - afew_frames[0]).mean() < 3
