"""ROS messages without rclpy: image messages -> RGB frames, pipeline results -> affect_msgs.

Used alike by the node (with rclpy's message classes) and by the bag tools (with rosbags'
classes): :mod:`.conversions` (sensor_msgs/Image and CompressedImage -> RGB),
:mod:`.messages` (FrameResult -> FaceAffectArray, stamps, viewing rays) and
:mod:`.msg_types` (affect_msgs definitions for rosbags typestores). Never imports rclpy.
"""
