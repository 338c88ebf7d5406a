import pytest
import torch

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
