import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """The post-search tests use tiny tensors: one intra-op thread avoids oversubscribing a shared CPU
    (on a loaded 2-core machine this makes them ~5x faster)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
