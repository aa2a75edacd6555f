"""Rosbag2 I/O for the offline tools, without a ROS 2 installation (via ``rosbags``).

- :mod:`~ros2_affect.bags.reader`: open sqlite3/MCAP bags, find image topics, iterate images.
- :mod:`~ros2_affect.bags.writer`: write bags with the message definitions embedded.
- :mod:`~ros2_affect.bags.labels`: ground-truth annotations (AFEW-VA, Aff-Wild2, CSV, bag topics),
  the one class-name table and the one rule for missing and out-of-range label values.
- :mod:`~ros2_affect.bags.photos`: labelled photo datasets (AffectNet ``labels.csv``, FER2013).
  Training reads every dataset through these readers.
- :mod:`~ros2_affect.bags.alignment`: pair predictions with annotations by stamp or frame index.
"""
