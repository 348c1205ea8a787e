"""Arrival counters for split launches that merge in their last program.

A split launch (split-K matmul, split-KV attention) may add its partials inside the launch: the
program of a tile that counts itself in last, on the tile's counter, runs the merge and puts the
counter back to zero for the next launch. Launches on one stream run one after another, so a
stream may reuse its counters; two streams could run split launches at once, so each stream gets
a set of its own, and launches captured into CUDA graphs on a stream get another set than eager
launches on it (a graph may be replayed on any stream while eager work runs on that one; graphs
captured on one stream share a set, so replay them on one stream at a time, as torch.compile's
CUDA graphs do). One block per device, allocated outside graph capture and outside every graph's
memory pool (an allocation there would belong to the graph) and kept for the life of the process (a
captured graph holds its address); sets are handed out as streams are first seen (PyTorch draws
streams from a fixed pool, so they are few). With no set to give, or more tiles than a set
holds, the caller runs its separate merge launch: same bits, one launch more.
"""

from __future__ import annotations

import threading

import torch

# One set of counters per CUDA stream, eager or capturing, a counter per output tile. A split
# launch has fewer programs per split than MATMUL_SPLIT_K_MAX_TILES / ATTENTION_SPLIT_MAX_PROGRAMS
# unless forced, and PyTorch streams come from a pool of 32 per priority: 64 x 1024 int32 = 256 KiB
# per device covers them.
SPLIT_ARRIVAL_SETS = 64
SPLIT_ARRIVAL_SET_SIZE = 1024

_BLOCKS: dict[torch.device, torch.Tensor] = {}
_SETS: dict[tuple[torch.device, int, bool], int] = {}
_LOCK = threading.Lock()


def tile_arrivals(device: torch.device, tiles: int) -> torch.Tensor | None:
    """``tiles`` zeroed int32 counters for a launch on the current stream, or None."""
    if tiles > SPLIT_ARRIVAL_SET_SIZE:
        return None
    cuda = device.type == "cuda"
    stream, capturing = 0, False
    if cuda:
        with torch.cuda.device(device):  # the stream the launch will use (launch() guards the same way)
            stream, capturing = torch.cuda.current_stream().cuda_stream, torch.cuda.is_current_stream_capturing()
    key = (device, stream, capturing)
    with _LOCK:  # two threads must not take the same set for different streams
        block = _BLOCKS.get(device)
        if block is None:
            if capturing:
                return None
            block = _allocate_outside_graph_pools(device)
            _BLOCKS[device] = block
        index = _SETS.get(key)
        if index is None:
            index = sum(1 for d, *_ in _SETS if d == device)
            if index >= SPLIT_ARRIVAL_SETS:
                return None
            _SETS[key] = index
    return block[index]


def _allocate_outside_graph_pools(device: torch.device) -> torch.Tensor:
    """The zeroed block, allocated on a thread of its own. torch.compile's CUDA graphs route the
    allocations of the thread that runs a graph's warm-up to the graph's private pool (a block
    made there is a tensor the pool does not track: "cudagraph pool not tracked as outputs");
    another thread allocates from the ordinary caching allocator."""
    made: list = []

    def allocate():
        try:
            block = torch.zeros(SPLIT_ARRIVAL_SETS, SPLIT_ARRIVAL_SET_SIZE, dtype=torch.int32, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # zeroed before any stream uses it
            made.append(block)
        except BaseException as err:  # re-raised on the caller's thread
            made.append(err)

    thread = threading.Thread(target=allocate, name="inductor_bi-arrivals")
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]
