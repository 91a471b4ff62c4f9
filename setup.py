"""ament_python package: `colcon build` on a ROS 2 machine and `pip install -e .` in a venv."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vmerpo"
# Exactly these top-level modules: generic names must not multiply in a ROS workspace.
TOP_LEVEL = ["perception", "learning", "sim", "robot_nodes", "vmerpo"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[p for t in TOP_LEVEL for p in (t, f"{t}.*")]),
    package_data={"robot_nodes": ["*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.yaml")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vmerpo maintainers",
    maintainer_email="maintainers@vmerpo.dev",
    description="Image-based offline meta-RL (LOMPO + MerPO) with ONNX/ROS 2 deployment",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "vmerpo = vmerpo.cli:main",
            "policy_node = robot_nodes.policy_node:main",
            "sim_node = robot_nodes.sim_node:main",
            "recorder_node = robot_nodes.recorder_node:main",
            "relay_node = robot_nodes.relay_node:main",
        ],
    },
)
