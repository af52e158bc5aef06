"""The package's imports run downward only, and never in a circle.

Every `import` / `from ... import` of every module is read from its source (function-level
imports included), resolved to a module of the package, and checked against the layer table:
a module may import modules of its own layer or of a lower one, and the module graph has no
cycle. `experiments/` and `data_builders/` are installed as `pam_jax.experiments` and
`pam_jax.data_builders`. The scripts of `benchmarks/` (not installed) may import the package; the
package never imports them.
"""
from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOTS = {"pam_jax": REPO / "pam_jax", "pam_jax.experiments": REPO / "experiments",
         "pam_jax.data_builders": REPO / "data_builders"}

# (layer, name, module prefixes); the most specific prefix wins
LAYERS = [
    (0, "core maths", ["pam_jax", "pam_jax.config", "pam_jax.diffusion", "pam_jax.pointcloud",
                       "pam_jax.normalize", "pam_jax.metrics", "pam_jax.preference",
                       "pam_jax.tasks", "pam_jax.batches", "pam_jax.provenance"]),
    (1, "models", ["pam_jax.models"]),
    (2, "data and configs", ["pam_jax.data", "pam_jax.data_builders", "pam_jax.experiments",
                             "pam_jax.toy.data", "pam_jax.toy.preference_data"]),
    (3, "training, selection, simulation", ["pam_jax.train", "pam_jax.select", "pam_jax.sim"]),
    (4, "evaluation, serving, benchmarks", ["pam_jax.eval", "pam_jax.serving", "pam_jax.toy", "pam_jax.bench",
                                                   "pam_jax.policy"]),
    (5, "workflows, annotator, command line", ["pam_jax.workflows", "pam_jax.annotate", "pam_jax.cli"]),
]


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for prefix, root in ROOTS.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def layer_of(module: str) -> tuple[int, str]:
    best = None
    for layer, title, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[0])):
                best = (p, layer, title)
    assert best is not None, f"{module} has no layer: add it to LAYERS"
    return best[1], best[2]


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The package modules `name` imports (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):   # a package's own __init__ is not an edge
                out.add(t)
    return out


def graph():
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def test_every_module_has_a_layer_and_the_table_prints():
    g = graph()
    rows = {}
    for m in sorted(g):
        layer, title = layer_of(m)
        rows.setdefault((layer, title), []).append(m)
    print("\nlayer table (a module imports only its own layer or lower ones):")
    for (layer, title), mods in sorted(rows.items()):
        print(f"  {layer} {title:32s} {len(mods):3d} modules: "
              + ", ".join(sorted({'.'.join(m.split('.')[:2]) for m in mods})))
    assert len(rows) == len(LAYERS)


def test_no_upward_import():
    bad = []
    for m, deps in graph().items():
        lm = layer_of(m)[0]
        bad += [f"{m} (layer {lm}) imports {d} (layer {layer_of(d)[0]})" for d in deps if layer_of(d)[0] > lm]
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The parser catches what it must: an import inside a function, and a relative one."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from pam_jax.cli import app\n    from . import tasks\n")
    known = {"pam_jax.cli.app", "pam_jax.cli", "pam_jax.tasks", "pam_jax.x"}
    assert imports_of("pam_jax.x", f, known) == {"pam_jax.cli.app", "pam_jax.cli", "pam_jax.tasks"}


def imported_names(path: pathlib.Path) -> set[str]:
    """Every absolute module name a file imports, as written (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return out


def test_the_package_never_imports_the_benchmark_scripts():
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")} | {"benchmarks"}
    assert {"hlo_kernels", "kernel_trace", "torch_reference"} <= scripts
    bad = [f"{m} imports {name}" for m, path in modules().items() for name in imported_names(path)
           if name.split(".")[0] in scripts]
    assert not bad, "the package imports benchmarks/:\n" + "\n".join(sorted(bad))
