"""sensor_msgs/Image and CompressedImage -> RGB, on real frames (AFEW-VA) and real bag JPEGs."""

from __future__ import annotations

import array
from pathlib import Path
from typing import Any, List

import cv2
import numpy as np
import pytest

from ros2_affect.errors import InvalidImageError
from ros2_affect.msgs.conversions import compressed_msg_to_rgb, image_msg_to_rgb
from ros2_affect.msgs.msg_types import create_typestore


@pytest.fixture(scope="module")
def store() -> Any:
    return create_typestore("humble")


@pytest.fixture(scope="module")
def frame(afew_frames: List[np.ndarray]) -> np.ndarray:
    """A real 576x720 RGB frame with a face."""
    return afew_frames[0]


def _header(store: Any) -> Any:
    t = store.types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam")


def _image_msg(store: Any, pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Any:
    """A sensor_msgs/Image of ``pixels`` ((H, W) or (H, W, C), uint8/uint16) with ``pad`` bytes per row."""
    h, w = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<") if pixels.dtype.itemsize > 1 else pixels.dtype
    row = pixels.astype(dtype).reshape(h, -1).view(np.uint8)
    padded = np.concatenate([row, np.full((h, pad), 0xAB, np.uint8)], axis=1)  # non-zero padding would show
    msg = store.types["sensor_msgs/msg/Image"](
        header=_header(store),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=padded.shape[1],
        data=np.ascontiguousarray(padded).reshape(-1),
    )
    # Through CDR and back: exactly what a subscriber or a bag reader hands over.
    return store.deserialize_cdr(store.serialize_cdr(msg, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")


@pytest.mark.parametrize("pad", [0, 13])
@pytest.mark.parametrize(
    "encoding, make",
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[:, :, ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_encodings_give_the_original_rgb(
    store: Any, frame: np.ndarray, encoding: str, make: Any, pad: int
) -> None:
    out = image_msg_to_rgb(_image_msg(store, np.ascontiguousarray(make(frame)), encoding, pad=pad))
    assert out.shape == frame.shape and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, frame)


def test_mono8_with_padding(store: Any, frame: np.ndarray) -> None:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    out = image_msg_to_rgb(_image_msg(store, gray, "mono8", pad=3))
    np.testing.assert_array_equal(out, np.dstack([gray] * 3))


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_honours_byte_order_and_padding(store: Any, frame: np.ndarray, bigendian: bool) -> None:
    # 12-bit sensor data in 16-bit words: values 0..4095.
    gray12 = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 16
    out = image_msg_to_rgb(_image_msg(store, gray12, "mono16", pad=6, bigendian=bigendian))
    lo, hi = int(gray12.min()), int(gray12.max())
    expected = np.rint((gray12.astype(np.float32) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 0], expected)
    # The flag matters: the same bytes read with the other byte order give another image.
    wrong = _image_msg(store, gray12, "mono16", pad=6, bigendian=bigendian)
    wrong.is_bigendian = int(not bigendian)
    assert not np.array_equal(image_msg_to_rgb(wrong), out)


@pytest.mark.parametrize("container", [bytes, lambda b: array.array("B", b), list])
def test_rclpy_style_data_containers(store: Any, frame: np.ndarray, container: Any) -> None:
    # rclpy hands uint8[] as array.array('B'); some client code builds bytes or lists.
    msg = _image_msg(store, np.ascontiguousarray(frame[:40, :50]), "rgb8", pad=2)
    msg.data = container(msg.data.tobytes())
    np.testing.assert_array_equal(image_msg_to_rgb(msg), frame[:40, :50])


def test_unknown_encoding(store: Any, frame: np.ndarray) -> None:
    msg = _image_msg(store, frame, "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(InvalidImageError, match=r"image encoding 'yuv422' is not supported; accepted: rgb8, bgr8"):
        image_msg_to_rgb(msg)


def test_step_smaller_than_a_row(store: Any, frame: np.ndarray) -> None:
    msg = _image_msg(store, frame, "rgb8")
    msg.step = 720 * 3 - 1
    with pytest.raises(InvalidImageError, match=r"image step 2159 is smaller than one row of 720 rgb8 pixels \(2160"):
        image_msg_to_rgb(msg)


def test_truncated_data(store: Any, frame: np.ndarray) -> None:
    msg = _image_msg(store, frame, "bgr8", pad=4)
    msg.data = msg.data[:-100]
    with pytest.raises(InvalidImageError, match=r"truncated: 1246364 bytes for 720x576 bgr8 with step 2164"):
        image_msg_to_rgb(msg)


def test_data_longer_than_declared(store: Any, frame: np.ndarray) -> None:
    msg = _image_msg(store, frame, "rgb8")
    msg.height = 500
    with pytest.raises(InvalidImageError, match=r"has 1244160 bytes but 720x500 rgb8 .* height or step .* is wrong"):
        image_msg_to_rgb(msg)


def test_zero_size(store: Any) -> None:
    msg = store.types["sensor_msgs/msg/Image"](
        header=_header(store), height=0, width=640, encoding="rgb8", is_bigendian=0, step=1920,
        data=np.zeros(0, np.uint8),
    )
    with pytest.raises(InvalidImageError, match=r"image is empty \(640x0 pixels\)"):
        image_msg_to_rgb(msg)


# -- CompressedImage ---------------------------------------------------------------------------


def _compressed(store: Any, data: bytes, fmt: str) -> Any:
    return store.types["sensor_msgs/msg/CompressedImage"](
        header=_header(store), format=fmt, data=np.frombuffer(data, np.uint8).copy()
    )


def _bag_jpegs(rosbags_dir: Path, store: Any) -> List[Any]:
    from rosbags.highlevel import AnyReader

    msgs = []
    for bag in sorted(p for p in rosbags_dir.iterdir() if p.is_dir()):
        with AnyReader([bag], default_typestore=store) as reader:
            conns = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/CompressedImage"]
            for conn, _, raw in reader.messages(connections=conns):
                msgs.append(reader.deserialize(raw, conn.msgtype))
    return msgs


def test_real_bag_jpegs_decode(rosbags_dir: Path, store: Any) -> None:
    msgs = _bag_jpegs(rosbags_dir, store)
    assert len(msgs) >= 4
    for msg in msgs:
        out = compressed_msg_to_rgb(msg)
        reference = cv2.imdecode(np.asarray(msg.data), cv2.IMREAD_COLOR)[:, :, ::-1]
        assert out.shape == reference.shape and out.shape[:2] in ((960, 1280), (720, 1280))
        np.testing.assert_array_equal(out, reference)


def test_image_transport_jpeg_format_string(store: Any, frame: np.ndarray) -> None:
    ok, jpeg = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = compressed_msg_to_rgb(_compressed(store, jpeg.tobytes(), "rgb8; jpeg compressed bgr8"))
    assert out.shape == frame.shape
    direct = np.abs(out.astype(int) - frame.astype(int)).mean()
    swapped = np.abs(out[:, :, ::-1].astype(int) - frame.astype(int)).mean()
    assert direct < 3.0 and swapped > 3 * direct  # lossy, but the channel order is right


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", ""])
def test_png_is_lossless(store: Any, frame: np.ndarray, fmt: str) -> None:
    ok, png = cv2.imencode(".png", frame[:, :, ::-1])
    np.testing.assert_array_equal(compressed_msg_to_rgb(_compressed(store, png.tobytes(), fmt)), frame)


def test_mono16_png(store: Any, frame: np.ndarray) -> None:
    gray16 = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    ok, png = cv2.imencode(".png", gray16)
    out = compressed_msg_to_rgb(_compressed(store, png.tobytes(), "mono16; png compressed mono16"))
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    lo, hi = int(gray.min()), int(gray.max())
    expected = np.rint((gray.astype(np.float32) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 1], expected)


def test_corrupt_bytes(store: Any) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidImageError, match=r"\('jpeg', 5000 bytes\) is neither JPEG nor PNG data"):
        compressed_msg_to_rgb(_compressed(store, noise, "jpeg"))


def test_truncated_jpeg(store: Any, frame: np.ndarray) -> None:
    ok, jpeg = cv2.imencode(".jpg", frame)
    cut = jpeg.tobytes()[: len(jpeg) * 2 // 3]
    with pytest.raises(InvalidImageError, match=r"JPEG of \d+ bytes has no end-of-image marker; the data is truncated"):
        compressed_msg_to_rgb(_compressed(store, cut, "jpeg"))


def test_jpeg_with_garbage_inside(store: Any, frame: np.ndarray) -> None:
    data = bytearray(cv2.imencode(".jpg", frame)[1].tobytes())
    data[600:2000] = bytes(1400)  # wipes the Huffman tables / scan header region
    with pytest.raises(InvalidImageError, match=r"cannot be decoded"):
        compressed_msg_to_rgb(_compressed(store, bytes(data), "jpeg"))


def test_truncated_png(store: Any, frame: np.ndarray) -> None:
    png = cv2.imencode(".png", frame)[1].tobytes()
    with pytest.raises(InvalidImageError, match=r"\('png', \d+ bytes\) cannot be decoded; the data is corrupt"):
        compressed_msg_to_rgb(_compressed(store, png[: len(png) // 2], "png"))


def test_empty_data(store: Any) -> None:
    with pytest.raises(InvalidImageError, match=r"CompressedImage \('jpeg'\) has no data"):
        compressed_msg_to_rgb(_compressed(store, b"", "jpeg"))


@pytest.mark.parametrize(
    "fmt, match",
    [
        ("16UC1; compressedDepth png", r"is a depth image \(compressedDepth\)"),
        ("theora", r"format 'theora' is not supported; accepted: jpeg, png"),
        ("rgb8; h264 compressed", r"format 'rgb8; h264 compressed' is not supported"),
    ],
)
def test_unsupported_formats(store: Any, frame: np.ndarray, fmt: str, match: str) -> None:
    png = cv2.imencode(".png", frame)[1].tobytes()
    with pytest.raises(InvalidImageError, match=match):
        compressed_msg_to_rgb(_compressed(store, png, fmt))
