"""pytest's setup for the whole suite (tests/ and test_loss.py). The suite runs on two pytest-xdist workers
(pytest.ini); each test, and every process it starts, uses one thread: torch's default of a thread per core would
put four threads on the two cores, spinning against each other (OpenMP), many times slower."""
import os

os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # before torch is imported, for the children too

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped elsewhere (python gpu_check.py runs them)")


SLOW_FIRST = ("test_compare_quick_resumes_a_killed_run", "test_a_kill_anywhere_in_a_save")  # about 1-2 min each


def pytest_collection_modifyitems(config, items):
    # the slowest tests first: two workers take tests in order, so one started last would run on alone at the end
    items.sort(key=lambda item: not item.name.startswith(SLOW_FIRST))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: python gpu_check.py runs it on one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
