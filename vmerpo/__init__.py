"""vmerpo: image-based offline meta-RL for manipulators, deployed through ONNX and ROS 2."""

__version__ = "0.1.0"
