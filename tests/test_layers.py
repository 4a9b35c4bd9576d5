"""The package's imports run one way: every module imports only from its own layer or below, never in a circle.

The layers, from the bottom (docs/design.md, "Layers of the package"): a module's layer is the layer of
its top-level module or folder under ``arcee_np/``. Imports are read from the source (``ast``), every
one of them: at the top of a module and inside functions alike.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "arcee_np"

LAYERS = (
    ("blocks", "errors", "outputs"),
    ("backend", "cache", "trace"),
    ("model",),
    ("validation",),
    ("config", "generation", "io", "shipped"),  # shipped.py: where the shipped model's files are
    ("models", "pretrained", "task_models"),  # the model classes: models.py and the two modules it was split into
    ("training", "oracle", "pipeline"),
    ("cli", "__init__", "__main__"),  # the command line (cli.py or the cli/ package) and the package's own __init__
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}

# Imports of the command line from library modules that the arcee_np/cli/ package removes, each
# (importing module, imported module); empty once the library holds no command-line code.
KNOWN_CLI_EDGES = {
    ("arcee_np.oracle.cli", "arcee_np.cli"),
    ("arcee_np.oracle.gguf_check", "arcee_np.cli"),
    ("arcee_np.training.finetune", "arcee_np.cli"),
    ("arcee_np.training.finetune", "arcee_np"),  # the package's __version__, for the run's metadata
}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> set:
    """The arcee_np modules ``path`` imports (``from .x import y`` counts as x.y when x/y.py exists, else x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "arcee_np")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "arcee_np":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in ALL_MODULES else target)
    return {m for m in found if m != name}


ALL_MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in LAYER_OF, f"{module}: its top-level name {top!r} has no layer in tests/test_layers.py LAYERS"
    return LAYER_OF[top]


def import_graph() -> dict:
    return {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    for module in ALL_MODULES:
        layer(module)


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
                    for src, targets in import_graph().items() for dst in targets
                    if layer(dst) > layer(src) and (src, dst) not in KNOWN_CLI_EDGES)
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_circle():
    graph = {src: {dst for dst in targets if (src, dst) not in KNOWN_CLI_EDGES} for src, targets in
             import_graph().items()}
    # a package's __init__ re-exports its modules: importing a module runs its package's __init__ first, but
    # that is not an import of the module's own making, so only the edges written in the source count.
    state, circles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)
