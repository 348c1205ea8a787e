"""Command line: ``python -m inductor_bi explain MODULE:FACTORY``.

MODULE is a dotted module name (``mypkg.models``) or a path to a Python file
(``examples/demo.py``). FACTORY is a function in it that takes no argument and returns one of

    model                               (called with no input)
    (model, inputs)                     inputs: a tuple/list of positional arguments, or one tensor
    (model, inputs, kwargs)             kwargs: a dict of keyword arguments

where ``model`` is an nn.Module or any function ``torch.compile`` accepts. The report goes to
stdout (``--markdown`` for Markdown, ``-o FILE`` to write it). Nothing is computed: see
``inductor_bi.explain``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

import torch


def load_factory(spec: str):
    """'MODULE:FACTORY' -> the factory function (MODULE: dotted name or .py path)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"expected MODULE:FACTORY (e.g. examples/demo.py:make_model), got {spec!r}")
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name).resolve()
        if not path.is_file():
            raise SystemExit(f"no such file: {module_name}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        sys.path.insert(0, str(path.parent))  # the file's sibling imports work as when run
        module_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(Path.cwd()))
        module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"{module_name} has no attribute {attr!r}") from None


def model_and_inputs(made) -> tuple:
    """The factory's result as (model, args tuple, kwargs dict)."""
    if not isinstance(made, (tuple, list)):
        return made, (), {}
    if len(made) not in (2, 3):
        raise SystemExit("the factory must return model, (model, inputs) or (model, inputs, kwargs)")
    model, inputs, kwargs = (*made, {}) if len(made) == 2 else made
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    return model, tuple(inputs), dict(kwargs)


def _explain(args) -> int:
    from .explain import explain

    model, inputs, kwargs = model_and_inputs(load_factory(args.factory)())
    grad = torch.no_grad() if args.no_grad else contextlib.nullcontext()
    with grad:
        report = explain(
            model,
            *inputs,
            device=None if args.device == "traced" else args.device,
            dynamic=not args.static,
            mode=args.mode,
            options={"strict": not args.no_strict},
            run_graphs=args.run_graphs,
            **kwargs,
        )
    root = str(Path.cwd())
    text = report.to_markdown(root=root) if args.markdown else report.to_text(root=root)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inductor_bi", description="inductor_bi tools")
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser(
        "explain",
        help="report what backend='batch_invariant' does to a model (nothing is computed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("factory", help="MODULE:FACTORY, e.g. examples/demo.py:make_model or mypkg.models:make")
    ex.add_argument("--markdown", action="store_true", help="write Markdown instead of text")
    ex.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    ex.add_argument("--device", default="cuda", help="whose tile configs to report: cuda (default), cpu, or 'traced'")
    ex.add_argument("--static", action="store_true", help="dynamic=False (default: dynamic=True)")
    ex.add_argument("--mode", default=None, help="torch.compile mode, e.g. reduce-overhead")
    ex.add_argument("--no-strict", action="store_true", help="report as options={'strict': False} compiles")
    ex.add_argument("--no-grad", action="store_true", help="trace under torch.no_grad() (the inference graph)")
    ex.add_argument("--run-graphs", choices=("fake", "eager"), default="fake", help="see inductor_bi.explain")
    args = ap.parse_args(argv)
    if args.command == "explain":
        return _explain(args)
    return 2  # pragma: no cover  (argparse rejects unknown commands)


if __name__ == "__main__":
    sys.exit(main())
