"""Fixtures shared by the learning tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny networks: thread start-up costs more than the matmuls, and one thread keeps the
    numbers identical run to run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
