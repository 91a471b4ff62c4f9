"""`relay_node`: the latency benchmark's baseline. It answers every `image` with a zero
`command` at once (no decoding, no preprocessing, no inference), over the same transport,
QoS and executor as policy_node, so the difference between the two is the policy's cost."""

from __future__ import annotations

from robot_nodes.netsafe import ensure_safe_before_rclpy

ensure_safe_before_rclpy()

from rclpy.node import Node  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from robot_nodes.common import declare, run_node  # noqa: E402
from robot_nodes.conversions import fill_float64_array, stamp_to_ns  # noqa: E402


class RelayNode(Node):
    def __init__(self, node_name: str = "relay_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.action_dim = int(declare(self, "action_dim", 4, "length of the zero command"))
        self.pub = self.create_publisher(Float64MultiArray, "command", 10)
        self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)
        self._zeros = [0.0] * self.action_dim

    def _on_image(self, msg: Image) -> None:
        out = Float64MultiArray()
        fill_float64_array(out, self._zeros, stamp_to_ns(msg.header.stamp))
        self.pub.publish(out)


def main(args: list[str] | None = None) -> int:
    return run_node(RelayNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
