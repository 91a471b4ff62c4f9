"""ROS 2 latency benchmark (issue 7): policy_node vs a bare relay, image publish -> command.
`python bench/ros_latency.py --out results/ros_latency.json` (60 s per node and size)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot_nodes.benchmarks import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
