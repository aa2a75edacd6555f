"""``affect_node``: the rclpy adapter around the pipeline, and what only the node needs.

:mod:`.node` is the one module that imports rclpy at import time; :mod:`.parameters`,
:mod:`.diagnostics`, :mod:`.hri` (REP-155) and :mod:`.runtime` (newest-frame slot,
throttled logs, camera_info pairing) are plain Python so they are tested without ROS.
:mod:`.bench_node` measures the node over real DDS.
"""
