import os

import pytest
import torch

try:
    from hypothesis import settings
except ImportError:  # the GPU machine has no hypothesis; test_properties.py then skips
    settings = None
if settings is not None:
    # Property tests: a fixed, derandomised sample in CI (reproducible, bounded time); fresh random ones elsewhere.
    settings.register_profile("ci", derandomize=True, deadline=None, max_examples=150, print_blob=True)
    settings.register_profile("dev", deadline=None, max_examples=150)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")

def pytest_collection_modifyitems(config, items):
    # CUDA tests are marked so they skip, with a reason, wherever no GPU is visible.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device visible")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)

@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
