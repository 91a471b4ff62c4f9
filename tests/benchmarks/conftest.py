"""Fixtures the benchmark tests share with the learning tests."""

from tests.learning.conftest import one_torch_thread, tiny_synthetic_model  # noqa: F401
