"""``affect_node``: camera images in, per-face expression and valence/arousal out (rclpy).

A thin adapter around :class:`ros2_affect.core.pipeline.AffectPipeline`; everything that
can be tested without ROS lives in :mod:`~ros2_affect.node.parameters`,
:mod:`~ros2_affect.msgs.conversions`, :mod:`~ros2_affect.msgs.messages`,
:mod:`~ros2_affect.node.diagnostics`, :mod:`~ros2_affect.node.hri` and
:mod:`~ros2_affect.node.runtime`.

Topics (relative names resolve in the node's namespace and can be remapped):

* subscribes ``image`` (sensor_msgs/Image) or ``image/compressed``
  (sensor_msgs/CompressedImage) with sensor-data QoS (overridable through the
  ``qos_overrides.<topic>.subscription.*`` parameters), and with ``use_camera_info``
  also ``camera_info`` (paired with images by stamp, :class:`~ros2_affect.node.runtime.CameraInfoCache`);
* publishes ``~/faces`` (affect_msgs/FaceAffectArray, one per processed image, empty when
  nobody is visible), ``~/debug_image`` (optional), ``/diagnostics``, and REP-155 topics
  under ``/humans/faces`` when hri_msgs is installed (``hri_mode``, :mod:`~ros2_affect.node.hri`).

Why a plain Node and not a lifecycle node: the node has one expensive step (loading the
models), done once in the constructor, and no hardware to hand back; a failure there
exits with a clear message so ``respawn`` or the launch system's ``on_exit`` handles it.
A lifecycle node would add a manager to every deployment for no behaviour the users of
a perception node need. The constructor is split so a lifecycle wrapper would only have
to call ``_configure`` / ``_activate`` from its transitions.

Processing model: the subscription callback only stores the newest image in a one-slot
mailbox (:class:`~ros2_affect.node.runtime.LatestSlot`); a worker thread takes it,
converts, runs the pipeline and publishes. When processing is slower than the camera,
older images are dropped (counted in diagnostics) instead of queueing up latency.
Callbacks never raise: image faults are logged once per kind (throttled) and skipped.
Everything that changes the node's entities (REP-155 per-face publishers and
subscriptions, the debug image publisher) happens on the executor's thread: the worker
hands REP-155 output over through a guard condition, and the debug publisher is swapped
under a lock the worker holds while publishing.
"""

from __future__ import annotations

import array
import threading
from typing import Any, Dict, List, Optional, Tuple

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ros2_affect.config import PipelineConfig
from ros2_affect.core.types import FrameResult
from ros2_affect.errors import AffectError, ConfigError, InvalidImageError
from ros2_affect.msgs.frame_processor import FrameProcessor
from ros2_affect.msgs.messages import rclpy_message_types, stamp_ns_of
from ros2_affect.node import diagnostics
from ros2_affect.node.hri import (
    HriRoi,
    TrackedIds,
    crop_box_px,
    face_topic,
    hri_expression,
    hri_roi,
    match_faces_to_rois,
)
from ros2_affect.node.parameters import (
    NodeSettings,
    ParameterSpec,
    all_parameter_specs,
    node_settings_from_parameters,
    pipeline_config_from_parameters,
    validate_changes,
)
from ros2_affect.node.runtime import (
    CameraInfoCache,
    LatestSlot,
    ProblemLog,
    RosLogHandler,
    problem_key,
    sibling_topic,
)

NODE_NAME = "affect_node"

_ROS_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
}

#: Seconds two stamps may differ to count as the same instant (image vs. camera_info).
CAMERA_INFO_SLOP_S = 0.02


def sensor_data_qos() -> QoSProfile:
    """A fresh copy of rclpy's sensor-data profile (best effort, keep last 5, volatile).

    create_subscription writes the QoS overrides into the profile it is given, so the
    shared ``qos_profile_sensor_data`` must not be passed. ``copy.deepcopy`` of it fails on
    Humble and Jazzy (its Duration members wrap pybind11 objects that cannot be pickled).
    """
    base = qos_profile_sensor_data
    return QoSProfile(
        history=base.history,
        depth=base.depth,
        reliability=base.reliability,
        durability=base.durability,
        lifespan=base.lifespan,
        deadline=base.deadline,
        liveliness=base.liveliness,
        liveliness_lease_duration=base.liveliness_lease_duration,
    )


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
        self._log_bridge = RosLogHandler(self.get_logger())
        self._log_bridge.attach()
        self._specs = {spec.name: spec for spec in all_parameter_specs()}
        self._problems = ProblemLog(self.get_logger().warning)
        self._stats = diagnostics.NodeStatistics()
        self._slot: LatestSlot[Any] = LatestSlot()
        self._pipeline_lock = threading.Lock()
        self._debug_lock = threading.Lock()
        self._pending_config: Optional[PipelineConfig] = None
        self._previous_snapshot: Optional[diagnostics.StatisticsSnapshot] = None
        self._camera_infos: Optional[CameraInfoCache] = None
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
        self._processor = FrameProcessor(self._pipeline, self._msg_types)
        self._faces_pub = self.create_publisher(self._msg_types.FaceAffectArray, "~/faces", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._debug_pub: Optional[Any] = None
        self._set_debug_publisher(self._settings.publish_debug_image)
        self._hri: Optional[_HriOutput] = None
        if self._settings.hri_mode != "off":
            try:
                self._hri = _HriOutput(self, self._settings.hri_mode)
            except ImportError:
                self.get_logger().info("hri_msgs is not installed; REP-155 topics under /humans/faces are off")

    def _activate(self) -> None:
        """Subscribe, start the worker thread and the diagnostics timer."""
        settings = self._settings
        image_type = CompressedImage if settings.compressed else Image
        topic = f"{settings.image_topic.rstrip('/')}/compressed" if settings.compressed else settings.image_topic
        self._image_sub = self.create_subscription(
            image_type,
            topic,
            self._receive,
            sensor_data_qos(),
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        self._image_topic = self._image_sub.topic_name  # remapped and namespaced: what diagnostics name
        subscribed = self._image_topic
        if settings.use_camera_info:
            self._camera_infos = CameraInfoCache(CAMERA_INFO_SLOP_S)
            self._info_sub = self.create_subscription(
                CameraInfo, sibling_topic(settings.image_topic, "camera_info"), self._on_camera_info, sensor_data_qos()
            )
            subscribed += f" + {self._info_sub.topic_name}"
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
        # Executor thread only; the lock keeps the worker from publishing on a destroyed publisher.
        with self._debug_lock:
            if enabled and self._debug_pub is None:
                self._debug_pub = self.create_publisher(Image, "~/debug_image", 2)
            elif not enabled and self._debug_pub is not None:
                self.destroy_publisher(self._debug_pub)
                self._debug_pub = None

    # -- callbacks (never raise) ---------------------------------------------------------------

    def _receive(self, msg: Any) -> None:
        self._stats.record_received()
        if self._slot.put(msg):
            self._stats.record_dropped()

    def _on_camera_info(self, info: Any) -> None:
        if self._camera_infos is not None:
            self._camera_infos.add(stamp_ns_of(info.header.stamp), info)

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
                # Applied by the worker before its next image (retune, or a rebuild), so this callback stays fast.
                with self._pipeline_lock:
                    self._pending_config = check.pipeline
                self.get_logger().info(f"pipeline settings changed ({', '.join(sorted(changes))})")
            return SetParametersResult(successful=True)
        except Exception as exc:  # a callback must answer, never raise
            return SetParametersResult(successful=False, reason=f"internal error while applying: {exc}")

    # -- worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._slot.closed:
            msg = self._slot.take(timeout_s=0.5)
            if msg is None:
                continue
            try:
                self._apply_pending_config()
                self._process(msg)
            except Exception as exc:  # keep the thread alive whatever happens
                message = f"processing failed: {type(exc).__name__}: {exc}"
                self._stats.record_processing_error(message)
                self._problems.report(problem_key(exc, "process"), message)

    def _apply_pending_config(self) -> None:
        with self._pipeline_lock:
            config, self._pending_config = self._pending_config, None
        if config is None:
            return
        try:
            if self._pipeline.retune(config):  # thresholds, geometry, tracker: models and tracks stay
                self.get_logger().info("pipeline settings applied (models and tracks kept)")
                return
        except AffectError as exc:
            self.get_logger().error(f"could not apply the new settings, keeping the previous ones: {exc}")
            return
        from ros2_affect.core.pipeline import create_pipeline

        try:
            new = create_pipeline(config)
        except AffectError as exc:
            self.get_logger().error(f"could not rebuild the pipeline, keeping the previous settings: {exc}")
            return
        self.get_logger().info("pipeline rebuilt for the new settings (tracks restart)")
        old, self._pipeline = self._pipeline, new
        self._processor.pipeline = new
        self._processor.reset()
        old.close()

    def _camera_info_for(self, msg: Any) -> Tuple[Optional[Any], str]:
        """The camera_info stamped like this image, or None and why (without use_camera_info: None, "")."""
        if self._camera_infos is None:
            return None, ""
        return self._camera_infos.match(stamp_ns_of(msg.header.stamp))

    def _report_camera_info(self, problem: str) -> None:
        if self._camera_infos is None:
            return
        if problem:
            problem = f"{problem} (on {self._info_sub.topic_name})"
            key = f"camera_info:{problem.split(';')[0].split(':')[0][:40]}"
            self._problems.report(key, f"faces have no viewing direction: {problem}")
        self._stats.record_camera_info(problem)

    def _process(self, msg: Any) -> None:
        encoding = getattr(msg, "encoding", getattr(msg, "format", "?"))
        info, problem = self._camera_info_for(msg)
        try:
            processed = self._processor.process(msg, info, camera_problem=problem)
        except InvalidImageError as exc:
            self._stats.record_conversion_error(str(exc))
            self._problems.report(problem_key(exc, encoding), f"skipping image: {exc}")
            return
        self._faces_pub.publish(processed.faces_msg)
        self._report_camera_info(processed.camera_problem)
        result = processed.result
        if self._hri is not None:
            self._hri.submit(result, msg.header, processed.rgb, self._pipeline.confirmed_track_ids)
        with self._debug_lock:
            if self._debug_pub is not None:
                self._publish_debug(processed.rgb, result, msg.header)
        self._stats.record_processed(processed.faces_msg.processing_latency_ms, len(result.faces))

    def _publish_debug(self, rgb: Any, result: FrameResult, header: Any) -> None:
        from ros2_affect.draw import annotate  # the same drawing as `ros2-affect run`

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
                ("REP-155 output", self._hri.describe() if self._hri is not None else "off"),
            ]
            status = DiagnosticStatus(
                level=bytes([level]),
                name=f"{self.get_fully_qualified_name()}: affect perception",
                message=message,
                hardware_id=self._image_topic,
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
        self._log_bridge.detach()
        super().destroy_node()


class _HriOutput:
    """REP-155 topics (see :mod:`ros2_affect.node.hri` for the two modes).

    The worker thread only hands results over (:meth:`submit`); publishing and creating
    or destroying per-face publishers and subscriptions happen in :meth:`_flush`, a guard
    condition callback on the executor's thread, where rclpy expects entity changes.
    """

    def __init__(self, node: Node, mode: str) -> None:
        from hri_msgs.msg import Expression, IdsList, NormalizedRegionOfInterest2D

        self._node = node
        self._mode = mode
        self._expression_t, self._ids_t, self._roi_t = Expression, IdsList, NormalizedRegionOfInterest2D
        self._pending: LatestSlot[Tuple[FrameResult, Any, Any, Tuple[str, ...]]] = LatestSlot()
        self._ids = TrackedIds()
        self._pubs: Dict[str, Dict[str, Any]] = {}
        self._derived_va_logged = False
        if mode == "standalone":
            self._tracked_pub = node.create_publisher(IdsList, "/humans/faces/tracked", 1)
        else:  # the face detector's ids and regions, to put our expressions on its faces
            self._detector_rois: Dict[str, HriRoi] = {}
            self._roi_subs: Dict[str, Any] = {}
            self._tracked_sub = node.create_subscription(IdsList, "/humans/faces/tracked", self._on_tracked, 1)
        self._guard = node.create_guard_condition(self._flush)

    def describe(self) -> str:
        if self._mode == "standalone":
            return f"standalone: {len(self._pubs)} face(s) announced on /humans/faces/tracked"
        return f"expression on the face detector's ids: {len(self._roi_subs)} face(s) on /humans/faces/tracked"

    def submit(self, result: FrameResult, header: Any, rgb: Any, live_ids: Tuple[str, ...]) -> None:
        """Worker thread: hand one processed image over to the executor thread."""
        self._pending.put((result, header, rgb, live_ids))
        self._guard.trigger()

    # -- executor thread ----------------------------------------------------------------------

    def _on_tracked(self, msg: Any) -> None:
        added, removed = self._ids.update(msg.ids)
        for face_id in removed:
            self._node.destroy_subscription(self._roi_subs.pop(face_id))
            self._detector_rois.pop(face_id, None)
            self._destroy_publishers(face_id)
        for face_id in added:
            self._roi_subs[face_id] = self._node.create_subscription(
                self._roi_t, face_topic(face_id, "roi"), lambda roi, i=face_id: self._on_roi(i, roi), 1
            )

    def _on_roi(self, face_id: str, roi: Any) -> None:
        if face_id in self._roi_subs:
            self._detector_rois[face_id] = HriRoi(roi.xmin, roi.ymin, roi.xmax, roi.ymax, roi.c)

    def _destroy_publishers(self, face_id: str) -> None:
        for pub in self._pubs.pop(face_id, {}).values():
            self._node.destroy_publisher(pub)

    def _publishers(self, face_id: str) -> Dict[str, Any]:
        pubs = self._pubs.get(face_id)
        if pubs is None:
            pubs = {"expression": self._node.create_publisher(self._expression_t, face_topic(face_id, "expression"), 1)}
            if self._mode == "standalone":
                pubs["roi"] = self._node.create_publisher(self._roi_t, face_topic(face_id, "roi"), 1)
                pubs["cropped"] = self._node.create_publisher(Image, face_topic(face_id, "cropped"), 1)
            self._pubs[face_id] = pubs
        return pubs

    def _flush(self) -> None:
        try:
            item = self._pending.take(timeout_s=0.0)
            if item is not None:
                self._publish(*item)
        except Exception as exc:  # e.g. an hri_msgs release with other fields: keep ~/faces going
            self._node.get_logger().error(f"REP-155 publishing failed: {type(exc).__name__}: {exc}")

    def _publish(self, result: FrameResult, header: Any, rgb: Any, live_ids: Tuple[str, ...]) -> None:
        rois = [hri_roi(face, result.width_px, result.height_px) for face in result.faces]
        if self._mode == "standalone":
            _, ended = self._ids.update(live_ids)
            for face_id in ended:
                self._destroy_publishers(face_id)
            self._tracked_pub.publish(self._ids_t(header=header, ids=list(self._ids.ids)))
            targets = {i: face.track_id for i, face in enumerate(result.faces) if face.track_id in live_ids}
        else:
            detector_rois = {i: r for i, r in self._detector_rois.items() if i in self._roi_subs}
            targets = match_faces_to_rois(rois, detector_rois)
        for index, face_id in targets.items():
            face, roi = result.faces[index], rois[index]
            pubs = self._publishers(face_id)
            expression = hri_expression(face)
            if expression is not None:
                if face.affect is not None and face.affect.va_derived and not self._derived_va_logged:
                    self._derived_va_logged = True
                    self._node.get_logger().info(
                        "valence/arousal on /humans/faces/<id>/expression are derived from the class probabilities "
                        "(the model has no valence/arousal regressor; ~/faces marks them va_derived)"
                    )
                pubs["expression"].publish(
                    self._expression_t(
                        header=header,
                        expression=expression.expression,
                        valence=expression.valence,
                        arousal=expression.arousal,
                        confidence=expression.confidence,
                    )
                )
            if "roi" in pubs:
                pubs["roi"].publish(
                    self._roi_t(header=header, xmin=roi.xmin, ymin=roi.ymin, xmax=roi.xmax, ymax=roi.ymax, c=roi.c)
                )
            box = crop_box_px(roi, result.width_px, result.height_px)
            if "cropped" in pubs and box is not None:
                x1, y1, x2, y2 = box
                crop = rgb[y1:y2, x1:x2]
                image = Image(header=header, height=crop.shape[0], width=crop.shape[1], encoding="rgb8",
                              is_bigendian=0, step=crop.shape[1] * 3)
                image.data = array.array("B", crop.tobytes())
                pubs["cropped"].publish(image)


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

