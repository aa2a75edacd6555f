"""Rosbags as an INPUT of ``ros2-affect run``, and the output bag it then writes.

:func:`open_bag_input` is the ``bag`` entry of :data:`ros2_affect.tools.inputs.INPUT_KINDS`:
a bag folder (with ``metadata.yaml``) or a ``.db3``/``.mcap`` file; its only image topic
(raw or compressed) is read in bag order, each image stamped with its header stamp (the
bag receive time when that is 0). :class:`BagResultWriter` then writes the pipeline's
results as ``affect_msgs/msg/FaceAffectArray`` on ``/affect_node/faces`` into an output
bag, with each source image's header and bag time, exactly as ``ros2-affect replay`` does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from ros2_affect.bags.reader import STORAGE_SUFFIXES, BagReader, create_bag_typestore
from ros2_affect.bags.writer import BagWriter, node_qos
from ros2_affect.core.types import FrameResult
from ros2_affect.errors import InvalidImageError
from ros2_affect.msgs.msg_types import FACE_AFFECT_ARRAY_MSGTYPE, FACES_TOPIC
from ros2_affect.tools.input_source import InputFrame, InputOptions, InputSource

LOG = logging.getLogger(__name__)


def is_bag_input(spec: str) -> bool:
    """True for a rosbag2 folder (holding metadata.yaml) or a .db3/.mcap file."""
    path = Path(spec)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix in STORAGE_SUFFIXES and path.is_file()


def open_bag_input(spec: str, options: InputOptions) -> InputSource:
    """An :class:`~ros2_affect.tools.inputs.InputSource` over the bag's image topic.

    The source also keeps, per frame index, the image's header and bag time
    (``source.bag_frames``) for :class:`BagResultWriter`.

    Raises:
        BagError: not a readable bag, or no / several image topics (listed).
    """
    store = create_bag_typestore()
    bag = BagReader(spec, typestore=store, strict=options.strict).open()
    try:
        info = bag.select_image_topic()
        duration_s = bag.reader.duration / 1e9
    except BaseException:
        bag.close()
        raise
    length = info.count if options.max_frames is None else min(info.count, options.max_frames)
    # nominal rate for the annotated video: the topic's mean rate, else the --fps default
    fps = (info.count - 1) / duration_s if info.count > 1 and duration_s > 0 else options.fps
    frames_meta: Dict[int, Tuple[Any, int, bool]] = {}

    def frames(source: InputSource) -> Iterator[InputFrame]:
        counted = 0  # the reader's unreadable messages already added to source.skipped
        for image in bag.images(info.name):
            source.skipped += bag.unreadable - counted
            counted = bag.unreadable
            if options.max_frames is not None and image.index >= options.max_frames:
                return
            try:
                rgb = image.to_rgb()
            except InvalidImageError as exc:
                LOG.warning("skipping image %d of %s: %s", image.index, info.name, exc)
                source.skipped += 1
                continue
            frames_meta[image.index] = (image.msg.header, image.bag_time_ns, image.stamp_from_header)
            yield InputFrame(image.index, image.stamp_ns, rgb, f"{image.index:06d}")
        source.skipped += bag.unreadable - counted  # messages lost in damaged storage (logged by the reader)

    source = InputSource("bag", Path(spec).name, fps, True, length, frames, close=bag.close)
    source.bag_path = Path(spec)  # type: ignore[attr-defined]
    source.bag_storage = bag.storage  # type: ignore[attr-defined]
    source.bag_frames = frames_meta  # type: ignore[attr-defined]
    source.typestore = store  # type: ignore[attr-defined]
    return source


class BagResultWriter:
    """Writes the results of a ``bag`` input source to an output bag (same storage as the input).

    Args:
        source: a source from :func:`open_bag_input`.
        path: the output bag folder, new (``run`` writes it inside its own new output folder).
    """

    def __init__(self, source: Any, path: Path, faces_topic: str = FACES_TOPIC) -> None:
        from ros2_affect.msgs.messages import rosbags_message_types

        self.path = Path(path)
        self._source = source
        self._topic = faces_topic
        self._msg_types = rosbags_message_types(source.typestore)
        self._writer = BagWriter(
            path, storage=source.bag_storage, typestore=source.typestore, tool="run", inputs=[source.bag_path]
        ).open()
        self._writer.add_topic(faces_topic, FACE_AFFECT_ARRAY_MSGTYPE, qos=[node_qos()])
        self.written = 0

    def write(self, index: int, result: FrameResult) -> None:
        """Write the FaceAffectArray of frame ``index`` (the InputFrame's index)."""
        from ros2_affect.msgs.messages import build_face_affect_array, to_time

        header, bag_time_ns, stamp_from_header = self._source.bag_frames.pop(index)
        if not stamp_from_header:  # the stamp used was the bag time: put it in the header
            header = self._msg_types.Header(stamp=to_time(result.stamp_ns, self._msg_types), frame_id=header.frame_id)
        array = build_face_affect_array(result, header, self._msg_types)
        self._writer.write(self._topic, bag_time_ns, array)
        self.written += 1

    def close(self, error: Optional[BaseException] = None) -> None:
        """Finish the bag (or, after ``error``, delete the partial one)."""
        if error is None:
            self._writer.close()
        else:
            self._writer.abort()

    def close_partial(self, custom_data: Dict[str, str]) -> None:
        """Finish the bag written so far at :attr:`path`, marked partial in its metadata
        (``run`` was stopped by a signal and keeps its whole output folder as partial)."""
        self._writer.close_partial(custom_data, in_place=True)
