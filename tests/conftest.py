import os

import pytest
import torch

from search import synthetic

# `syno search synthetic` (and build_options("synthetic")): the tests' synthetic space, a search problem
# that trains nothing (tests/search/synthetic.py)
synthetic.register()

if not torch.cuda.is_available():
    # The Triton backend's tests (tests/codegen/test_triton.py) run its kernels in Triton's CPU
    # interpreter. Triton reads this when it is first imported (by any test module, e.g. through
    # torch.compile), so it is set here, before collection.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="CUDA not available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
