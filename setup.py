"""ament_python package ros2_affect (also pip-installable without ROS)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ros2_affect"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={
        PACKAGE: ["models/*.onnx", "models/*.json", "models/*.md", "assets/README.md", "data/*.jpg", "data/*.md"]
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        # affect_msgs definitions, so pip-installed tools can build message types (msgs/msg_types.py)
        (f"share/{PACKAGE}/msg", glob("affect_msgs/msg/*.msg")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="ros2_affect maintainers",
    maintainer_email="maintainers@ros2-affect.invalid",
    description="Facial affect perception for HRI on ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "affect_node = ros2_affect.node.node:main",
            "ros2-affect = ros2_affect.tools.cli:main",
        ],
    },
)
