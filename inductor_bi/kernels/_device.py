"""What the launch choices read from a CUDA device, and which tensors Hopper's TMA can fetch.

Every choice made from these properties decides how fast, never how an element is computed:
launch shapes, pipeline depth and the fetch path (TMA or pointer loads) share one arithmetic.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch


class GpuProperties(NamedTuple):
    sm_count: int
    capability_major: int
    shared_bytes: int  # shared memory one block may use (opt-in maximum)


@functools.lru_cache(maxsize=None)
def gpu(device: torch.device) -> GpuProperties:
    """The properties of a CUDA device that the launch choices read (tests patch this)."""
    import triton

    props = torch.cuda.get_device_properties(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    shared = triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]
    return GpuProperties(props.multi_processor_count, props.major, shared)


# TMA (Hopper's tensor-memory-accelerator descriptors) for fp16 / bf16 tiles: it changes only how
# a tile reaches shared memory, not the tile, the MMA instructions or their order
# (tests/test_kernels_sm90_codegen compares the PTX float ops of both paths).
TMA_DTYPES = (torch.float16, torch.bfloat16)
TMA_MIN_CAPABILITY_MAJOR = 9
# What a descriptor can describe (CUDA's cuTensorMapEncodeTiled): 16-byte aligned base and strides
# (other than the last, which is 1), dims from 1 to 2**32, strides below 2**40 bytes. Other
# tensors use pointer loads.
TMA_ALIGN_BYTES = 16
TMA_MAX_DIM = 2**32
TMA_MAX_STRIDE_BYTES = 2**40


def tma_available(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the hardware can fetch tiles of this dtype by TMA."""
    return device.type == "cuda" and dtype in TMA_DTYPES and gpu(device).capability_major >= TMA_MIN_CAPABILITY_MAJOR


def tma_describable(t: torch.Tensor) -> bool:
    """Whether a TMA descriptor can describe ``t`` as it lies in memory (no copy)."""
    size = t.element_size()
    return (
        t.dim() >= 1
        and 0 not in t.shape
        and t.stride(-1) == 1
        and t.data_ptr() % TMA_ALIGN_BYTES == 0
        and max(t.shape) <= TMA_MAX_DIM
        and all(0 < stride * size < TMA_MAX_STRIDE_BYTES and (stride * size) % TMA_ALIGN_BYTES == 0 for stride in t.stride()[:-1])
    )
