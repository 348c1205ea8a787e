import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, settings

from tests._support import graphs  # noqa: F401  (fixture: the aten graphs the backend rewrote)

# CI runs the Triton interpreter on 2 CPU cores: few examples. The GPU run raises them.
settings.register_profile(
    "ci", max_examples=12, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "gpu", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The CPU reference mode warns once that it is slow; tests know.
warnings.filterwarnings("ignore", message="inductor_bi: running batch-invariant Triton kernels on the CPU")


def pytest_collection_modifyitems(config, items):
    """A test marked slow runs only when ``-m`` names slow (the default run leaves it out)."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow on the interpreter: run with -m slow")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _compile_caches_off():
    """Every test compiles for real: tests record the graphs the backend rewrites, and a graph
    served from AOTAutograd's or Inductor's on-disk cache (filled by an earlier test or run) is
    never rewritten. Session-wide, so module-scoped fixtures that compile are covered too. The
    cache test turns them back on in a fresh cache directory."""
    with torch.compiler.config.patch(force_disable_caches=True):
        yield
