"""Policy latency: PolicyRuntime (onnxruntime) vs torch eager, batch 1, one thread (issue 6)."""

import sys

from learning.benchmarks.policy_latency import main

if __name__ == "__main__":
    sys.exit(main())
