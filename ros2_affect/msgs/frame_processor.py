"""One image message in, its pipeline result and FaceAffectArray out: the path every front end shares.

The node (rclpy messages), ``ros2-affect replay`` and ``run`` on a bag (which is replay
plus a JSONL writer) and ``bench`` (rosbags messages) all turn a ``sensor_msgs/Image`` or
``CompressedImage`` (and, when there is one, the image's ``CameraInfo``) into a
:class:`ProcessedFrame` here, so they decode, stamp, run the pipeline and build the
message the same way. Backwards time is handled once, by the tracker (it ends every
track); this module only reports it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ros2_affect.core.types import Frame, FrameResult
from ros2_affect.errors import InvalidCameraInfoError
from ros2_affect.msgs.conversions import compressed_msg_to_rgb, image_msg_to_rgb
from ros2_affect.msgs.messages import (
    CameraModel,
    MessageTypes,
    build_face_affect_array,
    camera_model_from_info,
    header_for,
    image_stamp_ns,
)
from ros2_affect.msgs.msg_types import COMPRESSED_IMAGE_MSGTYPE, RAW_IMAGE_MSGTYPE

#: The one image-message dispatch: ROS message type (``msg_types.IMAGE_MSGTYPES``) -> decoder
#: to ``(H, W, 3)`` uint8 RGB.
IMAGE_DECODERS: Dict[str, Callable[[Any], np.ndarray]] = {
    RAW_IMAGE_MSGTYPE: image_msg_to_rgb,
    COMPRESSED_IMAGE_MSGTYPE: compressed_msg_to_rgb,
}


def image_msgtype(msg: Any) -> str:
    """The type name of an image message of either flavour (rclpy or rosbags): a
    ``sensor_msgs/CompressedImage`` has ``format``, a ``sensor_msgs/Image`` has not."""
    return COMPRESSED_IMAGE_MSGTYPE if hasattr(msg, "format") else RAW_IMAGE_MSGTYPE


def is_compressed(msg: Any) -> bool:
    """sensor_msgs/CompressedImage rather than sensor_msgs/Image; either flavour."""
    return image_msgtype(msg) == COMPRESSED_IMAGE_MSGTYPE


def decode_image_msg(msg: Any) -> np.ndarray:
    """An Image or CompressedImage message (rclpy or rosbags) as ``(H, W, 3)`` uint8 RGB.

    Raises:
        InvalidImageError: an unsupported encoding, inconsistent sizes, corrupt data.
    """
    return IMAGE_DECODERS[image_msgtype(msg)](msg)


@dataclass(frozen=True)
class ProcessedFrame:
    """What one image gave.

    Attributes:
        result: the pipeline's output.
        faces_msg: its ``affect_msgs/FaceAffectArray``, with the source header (or one carrying
            the fallback stamp when the header's was zero).
        rgb: the decoded image (for drawing).
        stamp_from_header: False when the header stamp was 0 and the fallback stamp was used.
        camera_problem: why the faces have no viewing ray despite a camera_info being
            expected ("" when they have one or none was expected).
        decode_ms: time spent decoding the message.
    """

    result: FrameResult
    faces_msg: Any
    rgb: np.ndarray
    stamp_from_header: bool
    camera_problem: str
    decode_ms: float


class FrameProcessor:
    """Image messages -> :class:`ProcessedFrame`, with a pipeline and a message flavour.

    Args:
        pipeline: an :class:`~ros2_affect.core.pipeline.AffectPipeline` (swappable:
            :attr:`pipeline`).
        msg_types: the message classes to build (rclpy's or a rosbags typestore's).

    When stamps go backwards (a bag looping, a clock reset) the pipeline's tracker ends every
    track and logs why (:meth:`~ros2_affect.core.tracking.Tracker.update`, the one place that
    decides it); :attr:`time_jumps` counts those frames here.
    """

    def __init__(
        self,
        pipeline: Any,
        msg_types: MessageTypes,
    ) -> None:
        self.pipeline = pipeline
        self._msg_types = msg_types
        self._camera: Optional[Tuple[Any, int, int, CameraModel]] = None
        self.time_jumps = 0

    def reset(self) -> None:
        """Forget the tracks (a new pipeline, a new recording)."""
        self.pipeline.reset()

    def process(
        self,
        msg: Any,
        camera_info: Any = None,
        fallback_stamp_ns: Optional[int] = None,
        latency_ms: Optional[float] = None,
        camera_problem: str = "",
    ) -> ProcessedFrame:
        """Decode, stamp, run the pipeline, build the FaceAffectArray.

        Args:
            msg: sensor_msgs/Image or CompressedImage.
            camera_info: the image's sensor_msgs/CameraInfo, or None.
            fallback_stamp_ns: the stamp to use when the header's is 0 (a bag's receive time).
            latency_ms: written as ``processing_latency_ms``; default: measured here.
            camera_problem: why ``camera_info`` is None although one is expected (reported back).

        Raises:
            InvalidImageError: the message cannot be decoded (nothing else happens).
        """
        start = time.perf_counter()
        rgb = decode_image_msg(msg)
        decoded = time.perf_counter()
        stamp_ns, stamp_from_header = image_stamp_ns(msg.header, fallback_stamp_ns)
        jumps_before = self.pipeline.tracker.time_jumps
        frame_id = str(msg.header.frame_id)
        result = self.pipeline.process(Frame(rgb, stamp_ns, frame_id))
        if self.pipeline.tracker.time_jumps != jumps_before:  # the tracker restarted the tracks
            self.time_jumps += 1
        camera, problem = self._camera_model(camera_info, int(rgb.shape[1]), int(rgb.shape[0]))
        # the header as it came (bit-exact stamps), unless its stamp was replaced
        header = msg.header if stamp_from_header else header_for(result, self._msg_types)
        if latency_ms is None:
            latency_ms = (time.perf_counter() - start) * 1000.0
        faces_msg = build_face_affect_array(result, header, self._msg_types, camera_info=camera, latency_ms=latency_ms)
        return ProcessedFrame(
            result, faces_msg, rgb, stamp_from_header, problem or camera_problem, (decoded - start) * 1000.0
        )

    def _camera_model(self, info: Any, width: int, height: int) -> Tuple[Optional[CameraModel], str]:
        if info is None:
            return None, ""
        cached = self._camera  # keeps the message alive, so `is` cannot match a recycled id
        if cached is not None and cached[0] is info and cached[1:3] == (width, height):
            return cached[3], ""
        try:
            model = camera_model_from_info(info, width, height)
        except InvalidCameraInfoError as exc:
            return None, f"camera_info is not usable: {exc}"
        self._camera = (info, width, height, model)
        return model, ""

