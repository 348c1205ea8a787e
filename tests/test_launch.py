"""The launcher's fallbacks on a GPU unlike the one the configs were pinned on (no GPU needed:
a stand-in kernel raises what Triton raises)."""

import pytest
import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from inductor_bi.kernels import _launch

SHARED_PER_BLOCK = 101_376  # a consumer Ampere GPU's shared memory per block


class KernelNeedingSharedPerStage:
    """Needs 40 KB of shared memory per pipeline stage; records the depths it was launched with."""

    def __init__(self):
        self.launched = []

    def __getitem__(self, grid):
        def run(*args, num_stages, **kwargs):
            self.launched.append(num_stages)
            if num_stages * 40_000 > SHARED_PER_BLOCK:
                raise OutOfResources(num_stages * 40_000, SHARED_PER_BLOCK, "shared memory")
            return num_stages

        return run


def test_a_pipeline_too_deep_for_shared_memory_launches_shallower_and_remembers(monkeypatch):
    monkeypatch.setattr(_launch, "_STAGES_THAT_FIT", {})
    kernel, cuda = KernelNeedingSharedPerStage(), torch.device("cuda")
    assert _launch.launch_with_stages_that_fit(kernel, (1,), cuda, (), {"num_stages": 4, "BLOCK": 64}) == 2
    assert kernel.launched == [4, 3, 2]
    assert _launch.launch_with_stages_that_fit(kernel, (1,), cuda, (), {"num_stages": 4, "BLOCK": 64}) == 2
    assert kernel.launched == [4, 3, 2, 2]  # remembered: no failed launch the second time
    assert _launch.launch_with_stages_that_fit(kernel, (1,), cuda, (), {"num_stages": 2, "BLOCK": 128}) == 2  # another shape


def test_other_resource_errors_and_a_single_stage_still_raise(monkeypatch):
    monkeypatch.setattr(_launch, "_STAGES_THAT_FIT", {})

    class TooManyThreads(KernelNeedingSharedPerStage):
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                raise OutOfResources(2048, 1024, "threads")

            return run

    with pytest.raises(OutOfResources, match="threads"):
        _launch.launch_with_stages_that_fit(TooManyThreads(), (1,), torch.device("cuda"), (), {"num_stages": 3})
    monkeypatch.setitem(globals(), "SHARED_PER_BLOCK", 30_000)  # not even one stage fits
    with pytest.raises(OutOfResources, match="shared memory"):
        _launch.launch_with_stages_that_fit(KernelNeedingSharedPerStage(), (1,), torch.device("cuda"), (), {"num_stages": 3})


@triton.jit
def _fma_kernel(X, Y, Z, OUT, N: tl.constexpr):
    i = tl.arange(0, N)
    tl.store(OUT + i, tl.fma(tl.load(X + i), tl.load(Y + i), tl.load(Z + i)))


def test_interpreted_fma_rounds_once_like_the_gpu():
    """x * x - round(x * x) for x = 1 + 2**-12: the exact product is 1 + 2**-11 + 2**-24, whose
    last bit fp32 drops. A single rounding (GPU fma.rn) keeps the 2**-24; mul then add gives 0,
    which is what the interpreter's own tl.fma returns."""
    x = torch.full((16,), 1 + 2**-12, dtype=torch.float32)
    z = torch.full((16,), -(1 + 2**-11), dtype=torch.float32)
    out = torch.empty(16, dtype=torch.float32)
    _launch.launch(_fma_kernel, (1,), torch.device("cpu"), x, x, z, out, N=16)
    assert torch.equal(out, torch.full((16,), 2**-24, dtype=torch.float32))
    assert (x * x + z).eq(0).all()  # the two-rounding answer the test would otherwise see
