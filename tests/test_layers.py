"""perfbp's modules import downward only (see ARCHITECTURE.md, "Layers").

Every module in perfbp/ is read with :mod:`ast` (nothing is imported) and each
of its imports — at the top, inside functions, under ``if TYPE_CHECKING`` — is
checked.  perfbp's directories (``kernel/``, ``planning/``, ``symbols/``,
``data/``, ``run/``, ``cli/``) come in an order (DIRECTORY_ORDER): a module
imports from its own directory and those before it.  Each module also has a
layer, its directory's unless ROLES names it:

    0  pure data          kernel layouts and constants, the error hierarchy
    1  abi                the only module that touches cffi, the syscall, ioctls
    2  pure cores         need no kernel: they must not import abi
    3  API internals      events, counters, sessions ...
    4  perfbp             the package ``__init__``: the public front
    5  cli, tui, main     use only the public front (names in ``perfbp.__all__``)

A module may import perfbp modules of its own layer or lower, with two
exceptions: layer 2 must not import layer 1, and layer 5 may import only
``perfbp`` itself (names it exports), ``perfbp._plumbing`` (what the CLI needs
beyond the API) and other layer-5 modules.  ``cffi`` may be imported by
perfbp.kernel.abi and by perfbp.kernel._ffi_build, which precompiles the
declarations abi loads (perfbp.kernel._abi_ffi, the one user of
``_cffi_backend``); ``mmap`` by perfbp.kernel.abi and perfbp.kernel.ring
(which maps the ring buffer).  A new directory must be placed in the map.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "perfbp"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

#: The layer of each directory (subpackage) of perfbp and of its top-level
#: modules; a module takes its directory's layer unless ROLES names it.
DIRECTORY_LAYERS = {
    "perfbp.errors": 0,
    "perfbp._version": 0,
    "perfbp.kernel": 3,    # events, counters, sampling, launching: API internals
    "perfbp.planning": 3,
    "perfbp.symbols": 2,   # pure cores: ELF, DWARF, lines
    "perfbp.data": 3,
    "perfbp.run": 3,
    "perfbp": 4,           # the front (exactly: not its subpackages)
    "perfbp._plumbing": 4,
    "perfbp.cli": 5,
    "perfbp.__main__": 5,
}

#: Modules whose role sets them apart in their directory.
ROLES = {
    "perfbp.kernel._uapi": 0,      # kernel layouts and constants: pure data
    "perfbp.kernel._abi_ffi": 0,   # _uapi's declarations precompiled for cffi
    "perfbp.kernel._ffi_build": 0, # writes _abi_ffi (make ffi)
    "perfbp.kernel.abi": 1,        # the only module that calls the kernel
    "perfbp.kernel.arch": 2,       # pure cores: they need no kernel
    "perfbp.kernel.breakpoint": 2,
    "perfbp.kernel.system": 2,
    "perfbp.kernel.records": 2,
    "perfbp.kernel.ring": 2,
    "perfbp.kernel.slots": 2,
    "perfbp.kernel.holders": 2,
    "perfbp.kernel.bpf": 2,
    "perfbp.kernel.condition": 2,
    "perfbp.planning.regions": 2,
    "perfbp.planning.spec": 2,
    "perfbp.data.perfdata": 2,
    "perfbp.symbols.resolve": 3,   # resolves into planned watches
}

#: The directories in import order: a module imports from its own directory
#: and from those before it, never from one after it.
DIRECTORY_ORDER = ["perfbp.errors", "perfbp._version", "perfbp.kernel", "perfbp.planning",
                   "perfbp.symbols", "perfbp.data", "perfbp.run", "perfbp", "perfbp._plumbing",
                   "perfbp.cli", "perfbp.__main__"]


def directory_of(module: str) -> "str | None":
    """The DIRECTORY_LAYERS entry a module belongs to (the front only itself)."""
    if module in DIRECTORY_LAYERS:
        return module
    best = None
    for d in DIRECTORY_LAYERS:
        if d != PACKAGE and module.startswith(d + ".") and (best is None or len(d) > len(best)):
            best = d
    return best


class _Layers(dict):
    """module -> layer, from its role or its directory (None: unplaced)."""

    def get(self, module, default=None):
        if module in ROLES:
            return ROLES[module]
        d = directory_of(module)
        return DIRECTORY_LAYERS[d] if d is not None else default


LAYERS = _Layers({**DIRECTORY_LAYERS, **ROLES})

LAYER_NAMES = {
    0: "pure data",
    1: "abi",
    2: "pure core",
    3: "API internals",
    4: "public front",
    5: "user interface",
}

KERNEL_LAYER = 1
CORE_LAYER = 2
FRONT = "perfbp"
PLUMBING = "perfbp._plumbing"  # what the CLI needs beyond the API
UI_LAYER = 5

#: Outside modules only some perfbp modules may import.  Left free: fcntl
#: (pipes and CLOEXEC in launch are not the perf ABI) and ctypes (perfbp.run.check
#: uses it to allocate the memory cells its self-check watches); add
#: ``"ctypes": {"perfbp.kernel.abi"}`` here to confine every FFI to abi.
RESTRICTED_IMPORTS = {
    "cffi": {"perfbp.kernel.abi", "perfbp.kernel._ffi_build"},
    "_cffi_backend": {"perfbp.kernel._abi_ffi"},
    "mmap": {"perfbp.kernel.abi", "perfbp.kernel.ring"},
}


# --------------------------------------------------------------------------
# Reading the imports
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    line: int
    target: str                 # an absolute module name
    name: str | None = None     # for ``from target import name`` (not a module)


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path = PACKAGE_DIR) -> dict:
    """``{module name: path}`` of every module in the package."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def resolve_base(module: str, is_package: bool, level: int, base: str | None) -> str:
    """The absolute module a (possibly relative) ``from ... import`` reads."""
    if level == 0:
        return base or ""
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ValueError(f"relative import beyond the top of {PACKAGE} in {module}")
    anchor = ".".join(parts[: len(parts) - (level - 1)])
    return f"{anchor}.{base}" if base else anchor


def imports_of(source: str, module: str, is_package: bool, modules: set) -> list:
    """Every import in ``source`` (at any depth), resolved to absolute names.

    ``modules`` is the set of known module names, used to tell
    ``from perfbp import abi`` (a module) from ``from perfbp import Counter``.
    """
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = resolve_base(module, is_package, node.level, node.module)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if alias.name != "*" and candidate in modules:
                    found.append(Import(node.lineno, candidate))
                else:
                    found.append(Import(node.lineno, base, alias.name))
        elif isinstance(node, ast.Call):
            # importlib.import_module("perfbp.x") / __import__("perfbp.x")
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if fname in ("import_module", "__import__") and node.args and isinstance(
                    node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                target = node.args[0].value
                if target.startswith("."):
                    level = len(target) - len(target.lstrip("."))
                    target = resolve_base(module, is_package, level, target.lstrip(".") or None)
                found.append(Import(node.lineno, target))
    return sorted(found, key=lambda imp: imp.line)


def front_attribute_uses(source: str) -> list:
    """``perfbp.X`` attribute reads after ``import perfbp`` (``[(line, X)]``)."""
    tree = ast.parse(source)
    aliases = {
        alias.asname or alias.name
        for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names if alias.name == FRONT
    }
    return [
        (node.lineno, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in aliases
    ]


def exported_names(init_source: str) -> set:
    """``__all__`` of the front (plus its dunders, such as ``__version__``)."""
    names = set()
    for node in ast.walk(ast.parse(init_source)):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                        names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
                    elif target.id.startswith("__") and target.id.endswith("__"):
                        names.add(target.id)
    return names


# --------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------

def layer_of(module: str):
    return LAYERS.get(module)


def check_module(module: str, source: str, path: str, modules: set, exports: set,
                 is_package: bool = False) -> list:
    """Every layering violation of one module, one line of text each."""
    src_layer = layer_of(module)
    if src_layer is None:
        return [
            f"{path}: module {module} has no layer: add it to LAYERS in "
            f"tests/test_layers.py (0 pure data, 1 abi, 2 pure core, 3 API internals, "
            f"4 front, 5 cli/tui)"
        ]
    bad = []
    for imp in imports_of(source, module, is_package, modules):
        top = imp.target.split(".")[0]
        if top in RESTRICTED_IMPORTS:
            allowed = RESTRICTED_IMPORTS[top]
            if module not in allowed:
                bad.append(f"{path}:{imp.line} imports {imp.target}: only "
                           f"{', '.join(sorted(allowed))} may import {top}")
            continue
        if top != PACKAGE:
            continue  # stdlib or third party
        target = imp.target
        dst_layer = layer_of(target)
        where = f"{path}:{imp.line} imports {target}"
        if dst_layer is None:
            bad.append(f"{where}, which has no layer in LAYERS (is it a perfbp module?)")
            continue
        arrow = f"(layer {src_layer} -> layer {dst_layer})"
        if target == module:
            continue
        src_dir, dst_dir = directory_of(module), directory_of(target)
        if (src_dir in DIRECTORY_ORDER and dst_dir in DIRECTORY_ORDER
                and DIRECTORY_ORDER.index(dst_dir) > DIRECTORY_ORDER.index(src_dir)
                and src_layer != UI_LAYER and dst_layer <= src_layer):
            bad.append(f"{where}: {dst_dir} comes after {src_dir} in DIRECTORY_ORDER")
            continue
        if src_layer == UI_LAYER:
            if target == FRONT:
                if imp.name is not None and imp.name != "*" and imp.name not in exports:
                    bad.append(f"{path}:{imp.line} imports perfbp.{imp.name} {arrow}: "
                               f"{imp.name} is not exported by perfbp/__init__.py")
            elif dst_layer != UI_LAYER and target != PLUMBING:
                bad.append(f"{where} {arrow}: the user interface uses only the "
                           f"public front (from perfbp import ...)")
        elif src_layer == CORE_LAYER and dst_layer == KERNEL_LAYER:
            bad.append(f"{where} {arrow}: pure cores must not touch the kernel")
        elif dst_layer > src_layer:
            bad.append(f"{where} {arrow}: imports must point downward")
    if src_layer == UI_LAYER:
        for line, attr in front_attribute_uses(source):
            if attr not in exports:
                bad.append(f"{path}:{line} uses perfbp.{attr} (layer {src_layer} -> "
                           f"layer {layer_of(f'{FRONT}.{attr}')}): not exported by "
                           f"perfbp/__init__.py")
    return bad


def check_package(root: Path = PACKAGE_DIR):
    """``(violations, modules checked, imports seen)`` for the whole package."""
    found = discover(root)
    modules = set(found) | set(LAYERS)
    init = root / "__init__.py"
    exports = exported_names(init.read_text()) if init.exists() else set()
    violations, seen = [], 0
    for module, path in found.items():
        source = path.read_text()
        rel = path.relative_to(root.parent).as_posix()
        is_package = path.name == "__init__.py"
        seen += len(imports_of(source, module, is_package, modules))
        violations += check_module(module, source, rel, modules, exports, is_package)
    return violations, sorted(found), seen


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

def test_imports_point_downward():
    violations, _, _ = check_package()
    assert not violations, (
        f"{len(violations)} layering violation(s) (see ARCHITECTURE.md and "
        "the layer map in tests/test_layers.py):\n  " + "\n  ".join(violations))


def import_cycles(root: Path = PACKAGE_DIR) -> "list[list[str]]":
    """Cycles among the package's modules (the front excluded), counting
    every import: at the top, inside functions, under TYPE_CHECKING."""
    found = discover(root)
    modules = set(found) | set(LAYERS)
    graph = {}
    for module, path in found.items():
        if module == PACKAGE:
            continue
        deps = {imp.target for imp in imports_of(path.read_text(), module,
                                                 path.name == "__init__.py", modules)}
        graph[module] = sorted(d for d in deps if d in found and d != PACKAGE and d != module)
    cycles, state = [], {}

    def visit(node: str, stack: "list[str]") -> None:
        state[node] = "open"
        for dep in graph.get(node, ()):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles():
    """Shared types live below the modules that share them (results.py holds
    what session and multiplex both return), lazy imports included."""
    cycles = import_cycles()
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_the_package():
    _, modules, seen = check_package()
    for module in ("perfbp", "perfbp.kernel._uapi", "perfbp.kernel.abi", "perfbp.errors"):
        assert module in modules
    assert seen >= 10, "too few imports found: is the walker broken?"


def test_the_front_exports_something():
    exports = exported_names((PACKAGE_DIR / "__init__.py").read_text())
    assert {"PerfbpError", "__version__"} <= exports, exports


def test_layer_map_names_are_well_formed():
    for module, layer in LAYERS.items():
        assert module == PACKAGE or module.startswith(PACKAGE + "."), module
        assert layer in LAYER_NAMES, (module, layer)
    assert set(DIRECTORY_ORDER) == set(DIRECTORY_LAYERS)
    for module in ROLES:
        assert directory_of(module) in DIRECTORY_LAYERS, module


def test_every_directory_is_in_the_map():
    """Each subpackage of perfbp has its place (a new one must be added)."""
    dirs = {f"{PACKAGE}.{p.name}" for p in PACKAGE_DIR.iterdir()
            if p.is_dir() and (p / "__init__.py").exists()}
    assert dirs <= set(DIRECTORY_LAYERS), dirs - set(DIRECTORY_LAYERS)


# --- self-tests: the checker can fail --------------------------------------------

MODULES = set(discover()) | set(LAYERS)
EXPORTS = {"Counter", "Breakpoint", "PerfbpError", "__version__"}


def _check(module, source, is_package=False):
    path = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    return check_module(module, source, path, MODULES, EXPORTS, is_package)


def test_self_test_cli_reaching_past_the_front():
    source = (
        "import os\n"
        "from perfbp import Counter, __version__\n"
        "from .kernel import abi\n"
        "from .errors import PerfbpError\n"
        "def main():\n"
        "    from perfbp.kernel import counter\n"
        "    from perfbp import _private_helper\n"
        "    import perfbp\n"
        "    return perfbp.Counter, perfbp.kernel.abi\n"
    )
    bad = _check("perfbp.cli", source)
    assert bad == [
        "perfbp/cli.py:3 imports perfbp.kernel.abi (layer 5 -> layer 1): the user interface "
        "uses only the public front (from perfbp import ...)",
        "perfbp/cli.py:4 imports perfbp.errors (layer 5 -> layer 0): the user interface "
        "uses only the public front (from perfbp import ...)",
        "perfbp/cli.py:6 imports perfbp.kernel.counter (layer 5 -> layer 3): the user interface "
        "uses only the public front (from perfbp import ...)",
        "perfbp/cli.py:7 imports perfbp._private_helper (layer 5 -> layer 4): "
        "_private_helper is not exported by perfbp/__init__.py",
        "perfbp/cli.py:9 uses perfbp.kernel (layer 5 -> layer 3): not exported by "
        "perfbp/__init__.py",
    ], bad


def test_self_test_ui_may_use_ui():
    assert _check("perfbp.__main__", "from .cli import main\nfrom perfbp import Counter\n") == []


def test_self_test_core_touching_the_kernel():
    source = "from ._uapi import PERF_RECORD_SAMPLE\ndef f():\n    from .abi import ffi\n"
    assert _check("perfbp.kernel.records", source) == [
        "perfbp/kernel/records.py:3 imports perfbp.kernel.abi (layer 2 -> layer 1): "
        "pure cores must not touch the kernel"]


def test_self_test_upward_and_restricted_imports():
    source = (
        "import cffi\n"
        "import mmap\n"
        "from cffi import FFI\n"
        "from .kernel import counter\n"
        "import perfbp.cli\n"
        "import importlib\n"
        "importlib.import_module('perfbp.run.session')\n"
        "from perfbp import nonexistent\n"
    )
    bad = _check("perfbp.errors", source)
    assert bad == [
        "perfbp/errors.py:1 imports cffi: only perfbp.kernel._ffi_build, perfbp.kernel.abi may import cffi",
        "perfbp/errors.py:2 imports mmap: only perfbp.kernel.abi, perfbp.kernel.ring may import mmap",
        "perfbp/errors.py:3 imports cffi: only perfbp.kernel._ffi_build, perfbp.kernel.abi may import cffi",
        "perfbp/errors.py:4 imports perfbp.kernel.counter (layer 0 -> layer 3): "
        "imports must point downward",
        "perfbp/errors.py:5 imports perfbp.cli (layer 0 -> layer 5): "
        "imports must point downward",
        "perfbp/errors.py:7 imports perfbp.run.session (layer 0 -> layer 3): "
        "imports must point downward",
        "perfbp/errors.py:8 imports perfbp (layer 0 -> layer 4): "
        "imports must point downward",
    ], bad
    assert _check("perfbp.kernel.ring", "import mmap\nfrom . import records\n") == []
    assert _check("perfbp.kernel.abi", "from cffi import FFI\nfrom . import _uapi\n") == []


def test_self_test_relative_imports_from_the_package_init():
    source = "from .kernel.counter import Counter\nfrom . import cli\n"
    assert _check("perfbp", source, is_package=True) == [
        "perfbp/__init__.py:2 imports perfbp.cli (layer 4 -> layer 5): "
        "imports must point downward"]


def test_self_test_unmapped_module_fails(tmp_path):
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("__all__ = []\n")
    (pkg / "gizmo.py").write_text("import os\n")
    violations, modules, _ = check_package(pkg)
    assert modules == ["perfbp", "perfbp.gizmo"]
    assert len(violations) == 1
    assert violations[0].startswith("perfbp/gizmo.py: module perfbp.gizmo has no layer")
