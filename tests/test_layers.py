"""The package's flow is one way: entry (backend, hooks, explain) -> passes -> lowerings / ops ->
kernels. Passes decide from the kernels' pinned tables (pure data), never from kernel code; the
kernels know nothing above them; and no module imports itself back through another."""

from __future__ import annotations

import ast

from tests._support import ROOT

PACKAGE = ROOT / "inductor_bi"


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The inductor_bi modules ``node`` names (a ``from . import x`` names module x if it is one)."""
    if node.level == 0:
        bases = [node.module] if node.module and node.module.startswith("inductor_bi") else []
    else:
        parts = importer.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        bases = [".".join(anchor + ([node.module] if node.module else []))]
    names = []
    for base in bases:
        subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
        names += subs + ([base] if len(subs) < len(node.names) else [])
    return [n for n in names if n in MODULES]


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, top_level_only: bool = False) -> set[str]:
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            found.update(_resolve(name, path.name == "__init__.py", node))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
    found.discard(name)
    return found


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imports_triton(name: str) -> bool:
    tree = ast.parse(MODULES[name].read_text())
    return any(
        (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "triton" for a in n.names))
        or (isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").split(".")[0] == "triton")
        for n in ast.walk(tree)
    )


def _kernel_facts(name: str) -> bool:
    """A kernels/ module of facts, no kernel code: a family's pinned table or the device probe."""
    return _in(name, "inductor_bi.kernels") and (name.endswith("_table") or name == "inductor_bi.kernels._device")


def test_passes_read_only_the_kernels_pinned_tables_never_kernel_code():
    leaks = {
        (m, k)
        for m in MODULES
        if _in(m, "inductor_bi.passes")
        for k in _imports(m)
        if _in(k, "inductor_bi.kernels") and k != "inductor_bi.kernels" and not _kernel_facts(k)
    }
    assert not leaks, f"passes importing kernel code: {sorted(leaks)}"
    facts = [m for m in MODULES if _kernel_facts(m)]
    assert len(facts) > 3
    for m in facts:
        code = [k for k in _imports(m) if k != "inductor_bi.kernels" and not _kernel_facts(k)]
        assert not code and not _imports_triton(m) or m.endswith("_device"), f"{m} imports kernel code: {code}"


def test_passes_never_import_the_layers_below_the_ops_or_the_entry():
    above = ("inductor_bi.lowerings", "inductor_bi.backend", "inductor_bi.hooks", "inductor_bi.explain")
    leaks = {(m, k) for m in MODULES if _in(m, "inductor_bi.passes") for k in _imports(m) if any(_in(k, a) for a in above)}
    assert not leaks, sorted(leaks)


def test_lowerings_and_ops_never_import_the_passes_or_the_entry():
    above = ("inductor_bi.passes", "inductor_bi.backend", "inductor_bi.hooks", "inductor_bi.explain")
    lower = [m for m in MODULES if _in(m, "inductor_bi.lowerings") or m == "inductor_bi.ops"]
    leaks = {(m, k) for m in lower for k in _imports(m) if any(_in(k, a) for a in above)}
    assert not leaks, sorted(leaks)


def test_kernels_import_nothing_above_them():
    leaks = {
        (m, k)
        for m in MODULES
        if _in(m, "inductor_bi.kernels")
        for k in _imports(m)
        if not _in(k, "inductor_bi.kernels") and k != "inductor_bi"
    }
    assert not leaks, sorted(leaks)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (module -> modules it imports), a package importing its
    own submodules excepted."""
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for k in sorted(graph.get(m, ())):
            if state.get(k) == 1:
                cycles.append(path[path.index(k) :] + [k])
            elif k not in state:
                visit(k, path + [k])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return [c for c in cycles if not all(_in(x, c[0]) for x in c)]


def test_no_module_imports_itself_back_through_another():
    cycles = _cycles({m: _imports(m, top_level_only=True) for m in MODULES})
    assert not cycles, cycles


def test_the_layer_checks_see_a_leak_and_a_circle():
    """The resolver finds a relative import of kernel code, and a circle is found (the checks
    above would fail on them)."""
    node = ast.parse("from ..kernels import matmul").body[0]
    assert _resolve("inductor_bi.passes.matmul", False, node) == ["inductor_bi.kernels.matmul"]
    assert not _kernel_facts("inductor_bi.kernels.matmul") and _kernel_facts("inductor_bi.kernels.matmul_table")
    assert _imports_triton("inductor_bi.kernels.matmul") and not _imports_triton("inductor_bi.kernels.matmul_table")
    assert _cycles({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}) == [["p.a", "p.b", "p.c", "p.a"]]
    assert _cycles({"p": {"p.a"}, "p.a": {"p"}}) == []
