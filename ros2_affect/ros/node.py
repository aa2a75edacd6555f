"""``affect_node``: camera images in, per-face expression and valence/arousal out (rclpy).

A thin adapter around :class:`ros2_affect.core.pipeline.AffectPipeline`; everything that
can be tested without ROS lives in :mod:`~ros2_affect.ros.parameters`,
:mod:`~ros2_affect.ros.conversions`, :mod:`~ros2_affect.ros.messages`,
:mod:`~ros2_affect.ros.diagnostics`, :mod:`~ros2_affect.ros.hri` and
:mod:`~ros2_affect.ros.runtime`.

Topics (relative names resolve in the node's namespace and can be remapped):

* subscribes ``image`` (sensor_msgs/Image) or ``image/compressed``
  (sensor_msgs/CompressedImage) with sensor-data QoS (overridable through the
  ``qos_overrides.<topic>.subscription.*`` parameters), and with ``use_camera_info``
  also ``camera_info`` (time-synchronised);
* publishes ``~/faces`` (affect_msgs/FaceAffectArray, one per processed image, empty when
  nobody is visible), ``~/debug_image`` (optional), ``/diagnostics``, and the REP-155
  topics under ``/humans/faces`` when hri_msgs is installed.

Why a plain Node and not a lifecycle node: the node has one expensive step (loading the
models), done once in the constructor, and no hardware to hand back; a failure there
exits with a clear message so ``respawn`` or the launch system's ``on_exit`` handles it.
A lifecycle node would add a manager to every deployment for no behaviour the users of
a perception node need. The constructor is split so a lifecycle wrapper would only have
to call ``_configure`` / ``_activate`` from its transitions.

Processing model: the subscription callback only stores the newest image in a one-slot
mailbox (:class:`~ros2_affect.ros.runtime.LatestSlot`); a worker thread takes it,
converts, runs the pipeline and publishes. When processing is slower than the camera,
older images are dropped (counted in diagnostics) instead of queueing up latency.
Callbacks never raise: image faults are logged once per kind (throttled) and skipped.
"""

from __future__ import annotations

import array
import copy
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ros2_affect.config import PipelineConfig
from ros2_affect.core.types import Frame, FrameResult
from ros2_affect.errors import AffectError, ConfigError, InvalidImageError
from ros2_affect.ros import diagnostics
from ros2_affect.ros.conversions import compressed_msg_to_rgb, image_msg_to_rgb
from ros2_affect.ros.hri import TrackedIds, confirmed_ids, face_topic, hri_expression, hri_roi
from ros2_affect.ros.messages import build_face_affect_array, rclpy_message_types, stamp_ns_of
from ros2_affect.ros.parameters import (
    NodeSettings,
    ParameterSpec,
    all_parameter_specs,
    node_settings_from_parameters,
    pipeline_config_from_parameters,
    validate_changes,
)
from ros2_affect.ros.runtime import LatestSlot, ProblemLog, problem_key, sibling_topic

NODE_NAME = "affect_node"

_ROS_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
}

#: Seconds two stamps may differ to count as the same instant (image vs. camera_info).
CAMERA_INFO_SLOP_S = 0.02


def descriptor_for(spec: ParameterSpec) -> ParameterDescriptor:
    """The rcl_interfaces descriptor of a parameter spec (type, description, range, read-only)."""
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=_ROS_TYPES[spec.type_name],
        description=spec.description,
        additional_constraints=spec.additional_constraints,
        read_only=spec.read_only,
    )
    if spec.min_value is not None and spec.max_value is not None:
        if spec.type_name == "double":
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)
            ]
        elif spec.type_name == "integer":
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)
            ]
    return descriptor


class AffectNode(Node):  # type: ignore[misc]  # rclpy is untyped where mypy runs
    """The affect perception node. See the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._specs = {spec.name: spec for spec in all_parameter_specs()}
        self._problems = ProblemLog(self.get_logger().warning)
        self._stats = diagnostics.NodeStatistics()
        self._slot: LatestSlot[Tuple[Any, Optional[Any]]] = LatestSlot()
        self._pipeline_lock = threading.Lock()
        self._pending_config: Optional[PipelineConfig] = None
        self._last_stamp_ns: Optional[int] = None
        self._previous_snapshot: Optional[diagnostics.StatisticsSnapshot] = None
        self._configure()
        self._activate()

    # -- setup -------------------------------------------------------------------------------

    def _configure(self) -> None:
        """Declare parameters, load the models, create publishers. Raises AffectError on bad settings."""
        for spec in self._specs.values():
            try:
                self.declare_parameter(spec.name, spec.default, descriptor_for(spec))
            except Exception as exc:  # rclpy's InvalidParameterType/ValueException from the parameter file
                raise _startup_error(spec, exc) from None
        values = self._parameter_values()
        self._settings: NodeSettings = node_settings_from_parameters(values)
        from ros2_affect.core.pipeline import create_pipeline

        self._pipeline = create_pipeline(pipeline_config_from_parameters(values))
        self._msg_types = rclpy_message_types()
        self._faces_pub = self.create_publisher(self._msg_types.FaceAffectArray, "~/faces", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._debug_pub: Optional[Any] = None
        self._set_debug_publisher(self._settings.publish_debug_image)
        self._hri: Optional[_HriPublishers] = None
        if self._settings.publish_hri:
            try:
                self._hri = _HriPublishers(self)
            except ImportError:
                self.get_logger().info("hri_msgs is not installed; REP-155 topics under /humans/faces are off")

    def _activate(self) -> None:
        """Subscribe, start the worker thread and the diagnostics timer."""
        settings = self._settings
        image_type = CompressedImage if settings.compressed else Image
        topic = f"{settings.image_topic.rstrip('/')}/compressed" if settings.compressed else settings.image_topic
        # create_subscription writes the QoS overrides into the profile it is given: copy the shared one.
        qos = copy.deepcopy(qos_profile_sensor_data)
        overrides = QoSOverridingOptions.with_default_policies()
        if settings.use_camera_info:
            import message_filters

            info_topic = sibling_topic(settings.image_topic, "camera_info")
            self._image_filter = message_filters.Subscriber(
                self, image_type, topic, qos_profile=qos, qos_overriding_options=overrides
            )
            self._info_filter = message_filters.Subscriber(
                self, CameraInfo, info_topic, qos_profile=copy.deepcopy(qos_profile_sensor_data)
            )
            self._sync = message_filters.ApproximateTimeSynchronizer(
                [self._image_filter, self._info_filter], queue_size=10, slop=CAMERA_INFO_SLOP_S
            )
            self._sync.registerCallback(self._on_image_and_info)
            subscribed = f"{self._image_filter.sub.topic_name} + {self._info_filter.sub.topic_name}"
        else:
            self._image_sub = self.create_subscription(
                image_type, topic, self._on_image, qos, qos_overriding_options=overrides
            )
            subscribed = self._image_sub.topic_name
        # Registered after every declaration (ours and the QoS overrides), so it only sees set requests.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="affect_worker", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(settings.diagnostics_period_s, self._publish_diagnostics)
        model = self._pipeline.model
        self.get_logger().info(
            f"listening on {subscribed} ({image_type.__name__}); publishing {self._faces_pub.topic_name}; "
            f"model {model.describe() if model is not None else 'none (detection and tracking only)'}"
        )

    def _parameter_values(self) -> Dict[str, Any]:
        return {name: self.get_parameter(name).value for name in self._specs}

    def _set_debug_publisher(self, enabled: bool) -> None:
        if enabled and self._debug_pub is None:
            self._debug_pub = self.create_publisher(Image, "~/debug_image", 2)
        elif not enabled and self._debug_pub is not None:
            self.destroy_publisher(self._debug_pub)
            self._debug_pub = None

    # -- callbacks (never raise) ---------------------------------------------------------------

    def _on_image(self, msg: Any) -> None:
        self._receive(msg, None)

    def _on_image_and_info(self, msg: Any, info: Any) -> None:
        self._receive(msg, info)

    def _receive(self, msg: Any, info: Optional[Any]) -> None:
        self._stats.record_received()
        if self._slot.put((msg, info)):
            self._stats.record_dropped()

    def _on_set_parameters(self, params: List[Any]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in self._specs}
        if not changes:  # use_sim_time, QoS overrides...: not ours to judge
            return SetParametersResult(successful=True)
        try:
            check = validate_changes(self._parameter_values(), changes)
            if not check.successful:
                return SetParametersResult(successful=False, reason=check.reason)
            assert check.settings is not None
            if "node" in check.needs:
                self._set_debug_publisher(check.settings.publish_debug_image)
            self._settings = check.settings
            if "pipeline" in check.needs:
                # Rebuilt by the worker before its next image, so this callback stays fast.
                with self._pipeline_lock:
                    self._pending_config = check.pipeline
                self.get_logger().info(f"pipeline settings changed ({', '.join(sorted(changes))}); rebuilding")
            return SetParametersResult(successful=True)
        except Exception as exc:  # a callback must answer, never raise
            return SetParametersResult(successful=False, reason=f"internal error while applying: {exc}")

    # -- worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._slot.closed:
            item = self._slot.take(timeout_s=0.5)
            if item is None:
                continue
            try:
                self._apply_pending_config()
                self._process(*item)
            except Exception as exc:  # keep the thread alive whatever happens
                message = f"processing failed: {type(exc).__name__}: {exc}"
                self._stats.record_processing_error(message)
                self._problems.report(problem_key(exc, "process"), message)

    def _apply_pending_config(self) -> None:
        with self._pipeline_lock:
            config, self._pending_config = self._pending_config, None
        if config is None:
            return
        from ros2_affect.core.pipeline import create_pipeline

        try:
            new = create_pipeline(config)
        except AffectError as exc:
            self.get_logger().error(f"could not rebuild the pipeline, keeping the previous settings: {exc}")
            return
        old, self._pipeline = self._pipeline, new
        old.close()
        self._last_stamp_ns = None

    def _process(self, msg: Any, info: Optional[Any]) -> None:
        start = time.perf_counter()
        encoding = getattr(msg, "encoding", getattr(msg, "format", "?"))
        try:
            rgb = compressed_msg_to_rgb(msg) if hasattr(msg, "format") else image_msg_to_rgb(msg)
        except InvalidImageError as exc:
            self._stats.record_conversion_error(str(exc))
            self._problems.report(problem_key(exc, encoding), f"skipping image: {exc}")
            return
        stamp_ns = stamp_ns_of(msg.header.stamp)
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            # A bag looping or a clock reset: old tracks would match across the jump.
            self.get_logger().info("image stamps went backwards; resetting tracks")
            self._pipeline.reset()
        self._last_stamp_ns = stamp_ns
        result = self._pipeline.process(Frame(image=rgb, stamp_ns=stamp_ns, frame_id=msg.header.frame_id))
        latency_ms = (time.perf_counter() - start) * 1000.0
        out = build_face_affect_array(result, msg.header, self._msg_types, camera_info=info, latency_ms=latency_ms)
        self._faces_pub.publish(out)
        if self._hri is not None:
            try:
                self._hri.publish(result, msg.header)
            except Exception as exc:  # e.g. an hri_msgs release with other fields: keep ~/faces going
                self.get_logger().error(f"REP-155 publishing failed, turning it off: {type(exc).__name__}: {exc}")
                self._hri = None
        if self._debug_pub is not None:
            self._publish_debug(rgb, result, msg.header)
        self._stats.record_processed(latency_ms, len(result.faces))

    def _publish_debug(self, rgb: Any, result: FrameResult, header: Any) -> None:
        from ros2_affect.tools.draw import annotate  # the same drawing as `ros2-affect run`

        canvas = annotate(rgb, result)
        height, width = canvas.shape[:2]
        image = Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
        image.data = array.array("B", canvas.tobytes())  # array.array: rclpy's fast path for uint8[]
        if self._debug_pub is not None:
            self._debug_pub.publish(image)

    # -- diagnostics -----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        try:
            snapshot = self._stats.snapshot()
            thresholds = diagnostics.Thresholds(self._settings.latency_warn_ms, self._settings.latency_error_ms)
            level, message = diagnostics.evaluate(snapshot, thresholds, self._previous_snapshot)
            self._previous_snapshot = snapshot
            model = self._pipeline.model
            extra = [
                ("backend", model.backend_name if model is not None else "none"),
                ("model id", model.model_id if model is not None else "none"),
                ("faces dropped beyond max_faces (total)", str(self._pipeline.faces_dropped_total)),
            ]
            status = DiagnosticStatus(
                level=bytes([level]),
                name=f"{self.get_fully_qualified_name()}: affect perception",
                message=message,
                hardware_id=self._settings.image_topic,
                values=[KeyValue(key=k, value=v) for k, v in diagnostics.key_values(snapshot, extra)],
            )
            header = Header(stamp=self.get_clock().now().to_msg())
            self._diag_pub.publish(DiagnosticArray(header=header, status=[status]))
        except Exception as exc:
            self._problems.report(problem_key(exc, "diagnostics"), f"diagnostics failed: {exc}")

    # -- shutdown --------------------------------------------------------------------------------

    def destroy_node(self) -> None:
        self._slot.close()
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.join(timeout=5.0)
        pipeline = getattr(self, "_pipeline", None)
        if pipeline is not None:
            pipeline.close()
        super().destroy_node()


class _HriPublishers:
    """REP-155 topics: /humans/faces/tracked plus roi/expression per confirmed face id."""

    def __init__(self, node: Node) -> None:
        from hri_msgs.msg import Expression, IdsList, NormalizedRegionOfInterest2D

        self._node = node
        self._types = (Expression, IdsList, NormalizedRegionOfInterest2D)
        self._tracked_pub = node.create_publisher(IdsList, "/humans/faces/tracked", 1)
        self._ids = TrackedIds()
        self._pubs: Dict[str, Tuple[Any, Any]] = {}

    def publish(self, result: FrameResult, header: Any) -> None:
        expression_t, ids_t, roi_t = self._types
        ids = confirmed_ids(result.faces)
        added, removed = self._ids.update(ids)
        for face_id in removed:
            for pub in self._pubs.pop(face_id, ()):
                self._node.destroy_publisher(pub)
        for face_id in added:
            self._pubs[face_id] = (
                self._node.create_publisher(roi_t, face_topic(face_id, "roi"), 1),
                self._node.create_publisher(expression_t, face_topic(face_id, "expression"), 1),
            )
        self._tracked_pub.publish(ids_t(header=header, ids=list(ids)))
        for face in result.faces:
            if face.track_id not in self._pubs:
                continue
            roi_pub, expression_pub = self._pubs[face.track_id]
            roi = hri_roi(face, result.width_px, result.height_px)
            roi_pub.publish(roi_t(header=header, xmin=roi.xmin, ymin=roi.ymin, xmax=roi.xmax, ymax=roi.ymax, c=roi.c))
            expression = hri_expression(face)
            if expression is not None:
                expression_pub.publish(
                    expression_t(
                        header=header,
                        expression=expression.expression,
                        valence=expression.valence,
                        arousal=expression.arousal,
                        confidence=expression.confidence,
                    )
                )


def _startup_error(spec: ParameterSpec, exc: Exception) -> AffectError:
    hint = ""
    if spec.type_name == "double":
        hint = f" (write a decimal point, e.g. {spec.name}: {float(spec.default)!r}, for a floating-point parameter)"
    limits = f"; accepted range [{spec.min_value}, {spec.max_value}]" if spec.min_value is not None else ""
    return ConfigError(f"parameter {spec.name}: {exc}{limits}{hint}")


def main(args: Optional[List[str]] = None) -> int:
    """Console script ``affect_node`` (``ros2 run ros2_affect affect_node``)."""
    rclpy.init(args=args)
    node: Optional[AffectNode] = None
    try:
        node = AffectNode()
        rclpy.spin(node)
    except AffectError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

