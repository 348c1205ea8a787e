"""Shared test support: loading examples/ and scripts as modules, recording the graphs the backend rewrites."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

from inductor_bi.passes._observe import Observer, observing
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal
from tests import _zoo

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_file(path: str, module_name: str):
    """Import a .py file of the repo that is not in a package (examples/, benchmarks/, tools/)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def load_example(name: str):
    """Import examples/<name>.py."""
    return load_file(f"examples/{name}.py", f"{name}_example")


def load_model_file():
    """examples/model.py (the Llama-style model), as the module examples/llm.py imports: one set of classes."""
    return load_file("examples/model.py", "model")


def sdpa_float64_reference(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """softmax(q k^T * scale + mask) v in float64, by torch's math SDPA (a row that sees no key
    gives 0, as the kernel's does). With both a mask and
    is_causal, the causal part (top-left aligned) is folded into the mask first: torch 2.11-2.13's
    math path composed the two this way, torch 2.14 and CUDA refuse the pair, and the kernel takes it."""
    m = attn_mask
    if m is not None and m.dtype != torch.bool:
        m = m.double()
    if m is not None and is_causal:
        tril = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        m = (m & tril) if m.dtype == torch.bool else m.masked_fill(~tril, float("-inf"))
        is_causal = False
    return torch.nn.functional.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=m, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
    )


def float64_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """softmax(q k^T * scale + mask) v in float64, written out and differentiable (torch's CPU flash
    SDPA gives NaN for causal rows at a scale <= 0, so it cannot be the reference there). K / V heads
    are repeated for GQA and broadcast otherwise, like torch; a row that sees no key gives 0 (and no
    gradient), like torch."""
    q, k, v = q.double(), k.double(), v.double()
    if enable_gqa:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], -3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], -3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    visible = torch.ones(scores.shape[-2:], dtype=torch.bool)
    if is_causal:
        visible = visible.tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        visible = visible & attn_mask
    elif attn_mask is not None:
        scores = scores + attn_mask.double()
    scores = scores.masked_fill(~visible, float("-inf"))
    sees = scores.amax(-1, keepdim=True) > float("-inf")
    p = torch.where(sees, torch.softmax(scores.masked_fill(~sees, 0.0), -1), 0.0)
    return p @ v


def error_chain_text(err: BaseException) -> str:
    """An exception and every exception it was raised from or during, one "Type: message" a line
    (torch.compile wraps a backend's error in its own)."""
    parts = []
    while err is not None:
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


class GraphRecorder:
    """Records every aten graph the backend rewrites, with its rewrites, by observing the real
    compile (passes/_observe.py): as a context manager, or through the ``graphs`` fixture."""

    def __init__(self):
        self.rewritten: list[tuple[torch.fx.GraphModule, list]] = []
        recorded = self.rewritten

        class Recording(Observer):
            stage = None

            def graph_in(self, gm, stage):
                self.stage = stage

            def rewritten(self, gm, rewrites):
                if self.stage != "aten":  # the aten graphs, not the Dynamo graph's attention pre-pass
                    return
                # a copy as the passes left it: later hooks (Inductor launches on CUDA) change gm in place
                graph = torch.fx.Graph()
                graph.output(graph.graph_copy(gm.graph, {}))
                recorded.append((torch.fx.GraphModule(gm, graph), rewrites))

        self._observing = observing(Recording())

    @property
    def graphs(self) -> list[torch.fx.GraphModule]:
        return [gm for gm, _ in self.rewritten]

    def __enter__(self):
        self._observing.__enter__()
        return self

    def __exit__(self, *exc):
        return self._observing.__exit__(*exc)


@pytest.fixture
def graphs():
    """Every aten graph the backend rewrites, with its rewrites: [(gm, rewrites), ...]."""
    with GraphRecorder() as recorder:
        yield recorder.rewritten


# tools/diagnose/diagnose_length.py's names for tests/gpu/test_hf_gpu.py's model: tests/_zoo.HF_GPU
# by Llama-style config names, built by the zoo's builders.
HF_GPU_SIZE = _zoo.llama_config(_zoo.HF_GPU)
HF_GPU_HEAD_DIM, HF_GPU_MOE = _zoo.HF_GPU.head_dim, (_zoo.HF_GPU.experts, _zoo.HF_GPU.moe_intermediate)


def build_hf_model(name: str, size: dict, head_dim: int, moe: tuple[int, int], experts_implementation=None):
    """The zoo's model ``name`` at ``size`` (Llama-style config names, as ``HF_GPU_SIZE``);
    ``moe`` is (num_experts, moe_intermediate_size)."""
    zoo_size = _zoo.Size(
        hidden=size["hidden_size"], layers=size["num_hidden_layers"], heads=size["num_attention_heads"],
        kv_heads=size["num_key_value_heads"], intermediate=size["intermediate_size"], vocab=size["vocab_size"],
        seq=_zoo.HF_GPU.seq, experts=moe[0], moe_intermediate=moe[1], positions=size["max_position_embeddings"],
    )  # fmt: skip
    assert zoo_size.head_dim == head_dim, f"head_dim is hidden_size / num_attention_heads in the zoo, not {head_dim}"
    options = {"experts_implementation": experts_implementation} if experts_implementation else {}
    return _zoo.build(_zoo.BY_NAME[name], zoo_size, **options)


def check_row_alone_and_accuracy(compiled, reference, x: torch.Tensor, row: int, tol_scale: float = 10) -> None:
    """Row ``row`` of the batch ``x`` has the bits of that row run alone, and the batch is close
    to ``reference`` (a float64 copy of the model) run in float64."""
    with torch.no_grad():
        batched = compiled(x)
        alone = compiled(x[row : row + 1])
    assert_rows_equal(batched[row : row + 1], alone)
    assert_close_to_reference(batched, reference(x.double()), dtype=torch.float32, tol_scale=tol_scale)


@pytest.fixture(scope="module")
def one_rank_group(tmp_path_factory):
    """A torch.distributed gloo group of this process alone (the WORLD group), for the module."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not built")
    store = dist.FileStore(str(tmp_path_factory.mktemp("gloo") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()
