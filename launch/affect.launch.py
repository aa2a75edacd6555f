"""Start affect_node on a camera.

    ros2 launch ros2_affect affect.launch.py camera:=/camera/color/image_raw
    ros2 launch ros2_affect affect.launch.py camera:=/head_camera/image_raw compressed:=true \
        namespace:=robot debug_image:=true backend:=tensorrt

Arguments:
    camera           image topic to read (the node's ``image``, or ``image/compressed`` with
                     compressed:=true, is remapped onto it)
    camera_info      its CameraInfo topic (default: ``camera_info`` next to ``camera``)
    namespace        namespace of the node (its ``~/faces`` becomes /<ns>/affect_node/faces)
    params_file      ROS 2 parameter file (default: the package's config/affect.yaml)
    backend          onnxruntime | tensorrt | torch; empty: as in params_file
    compressed       true: subscribe to sensor_msgs/CompressedImage on <camera>/compressed
    use_camera_info  true: add a viewing ray per face from CameraInfo
    debug_image      true: publish ~/debug_image
    log_level        debug | info | warn | error
    fastdds_profile  Fast DDS XML profile for the node's process; empty: the package's
                     config/fastdds_large_images.xml unless FASTRTPS_DEFAULT_PROFILES_FILE is
                     already set; none: leave the environment alone (docs/ros2.md, QoS)

The parameter file is read here with rcl's own rules (every section matching the node's
fully qualified name, ``/**``, ``/**/affect_node``, ``/<namespace>/affect_node``, merged
in file order) and passed to the node as a dictionary, so a malformed file fails the
launch with the file name and the offending key instead of a node that dies at start.
The packaged file's section is ``/**/affect_node``: it applies in any namespace.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

_BOOL_ARGS = {"compressed": "compressed", "use_camera_info": "use_camera_info", "debug_image": "publish_debug_image"}


def _as_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name}:={text!r} is not a boolean; use true or false")


def _launch_node(context, *args, **kwargs):  # type: ignore[no-untyped-def]
    from ros2_affect.assets import default_config_path
    from ros2_affect.config import load_parameter_file
    from ros2_affect.node.runtime import sibling_topic

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = arg("params_file") or str(default_config_path())
    namespace = "/" + arg("namespace").strip("/")
    parameters = load_parameter_file(params_file, "affect_node", namespace)  # ConfigError names the file
    overrides = {}
    if arg("backend"):
        overrides["model.backend"] = arg("backend")
    for launch_name, parameter in _BOOL_ARGS.items():
        if arg(launch_name):
            overrides[parameter] = _as_bool(launch_name, arg(launch_name))

    camera = arg("camera")
    camera_info = arg("camera_info") or sibling_topic(camera, "camera_info")
    env = {}
    profile = arg("fastdds_profile")
    if not profile and not os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        profile = os.path.join(get_package_share_directory("ros2_affect"), "config", "fastdds_large_images.xml")
    if profile and profile != "none":
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    return [
        Node(
            package="ros2_affect",
            executable="affect_node",
            name="affect_node",
            namespace=arg("namespace"),
            parameters=[parameters, overrides],
            remappings=[
                ("image", camera),
                ("image/compressed", f"{camera.rstrip('/')}/compressed"),
                ("camera_info", camera_info),
            ],
            arguments=["--ros-args", "--log-level", arg("log_level")],
            additional_env=env,
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("camera", default_value="/camera/image_raw", description="image topic to read"),
            DeclareLaunchArgument(
                "camera_info", default_value="", description="CameraInfo topic; empty: camera_info next to camera"
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
            DeclareLaunchArgument(
                "params_file", default_value="", description="parameter file; empty: the package's config/affect.yaml"
            ),
            DeclareLaunchArgument(
                "backend",
                default_value="",
                choices=["", "onnxruntime", "tensorrt", "torch"],
                description="inference backend; empty: as in params_file",
            ),
            DeclareLaunchArgument(
                "compressed", default_value="", description="true: sensor_msgs/CompressedImage on <camera>/compressed"
            ),
            DeclareLaunchArgument(
                "use_camera_info", default_value="", description="true: viewing ray per face from CameraInfo"
            ),
            DeclareLaunchArgument("debug_image", default_value="", description="true: publish ~/debug_image"),
            DeclareLaunchArgument(
                "fastdds_profile",
                default_value="",
                description="Fast DDS profile for the node; empty: the package's large-image profile; none: unset",
            ),
            DeclareLaunchArgument(
                "log_level", default_value="info", choices=["debug", "info", "warn", "error"], description="log level"
            ),
            OpaqueFunction(function=_launch_node),
        ]
    )
