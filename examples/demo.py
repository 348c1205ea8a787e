"""Demo: the same input row, computed inside batches of different sizes.

Stock torch.compile picks kernels per shape, so a row's output changes with its batch size.
With backend="batch_invariant" it is bitwise identical for every batch size.

    python examples/demo.py            # CPU (kernels run in Triton's interpreter: slow but exact)
    python examples/demo.py --device cuda
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn as nn

import inductor_bi  # noqa: F401  (the backend is also found by name through its entry point)


class SwiGLUMLP(nn.Module):
    def __init__(self, d: int, h: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"gate": nn.Linear(d, h, bias=False), "up": nn.Linear(d, h, bias=False), "down": nn.Linear(h, d, bias=False)})
            for _ in range(layers)
        )

    def forward(self, x):
        for b in self.blocks:
            x = x + b["down"](nn.functional.silu(b["gate"](x)) * b["up"](x))
        return x


def row_mismatches(fn, x: torch.Tensor, batch_sizes) -> dict[int, bool]:
    """For each batch size B: does row 0 computed in a batch of B differ from row 0 in the full batch?"""
    with torch.no_grad():
        full = fn(x)[0]
        return {b: not torch.equal(fn(x[:b])[0], full) for b in batch_sizes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dim", type=int, default=256)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="inductor_bi: running")
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = SwiGLUMLP(args.dim, 2 * args.dim, layers=2).to(device)
    x = torch.randn(64, args.dim, device=device)
    sizes = [1, 2, 3, 8, 32]

    print(f"row 0 of a batch of 64 vs row 0 of a batch of B (torch {torch.__version__}, {device})")
    results = {}
    for name, fn in [
        ("stock torch.compile", torch.compile(model, dynamic=True)),
        ('backend="batch_invariant"', torch.compile(model, backend="batch_invariant", dynamic=True)),
    ]:
        torch._dynamo.reset()
        results[name] = row_mismatches(fn, x, sizes)
    header = f"{'':28s}" + "".join(f"{'B=' + str(b):9s}" for b in sizes)
    print(header)
    for name, res in results.items():
        print(f"{name:28s}" + "".join(f"{'DIFFERS' if res[b] else 'same':9s}" for b in sizes))
    stock_differs = any(results["stock torch.compile"].values())
    ours_differs = any(results['backend="batch_invariant"'].values())
    print()
    print(f"stock torch.compile: row 0 {'changes' if stock_differs else 'did not change'} with the batch size")
    print(f"batch_invariant:     row 0 {'CHANGES (bug!)' if ours_differs else 'is bitwise identical for every batch size'}")
    return 1 if ours_differs else 0


if __name__ == "__main__":
    raise SystemExit(main())
