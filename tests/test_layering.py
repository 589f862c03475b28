"""Imports run one way (docs/architecture.md, Layers): utils < data < (sparse, retrieval) < models < eval < the entry
points. Every `yambda_dl` import of every module is read from its source (ast), those inside functions too, and an
import from a higher layer fails; so there is no import cycle between the packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yambda_dl"

# the first parts of a module's name -> its layer; a module imports only from its own layer or lower ones
LAYERS = {
    "yambda_dl.utils": 0,  # progress, atomic writes, memory checks, run folders and records
    "yambda_dl.data": 1,  # reading, converting, splitting, views of the data
    "yambda_dl.sparse": 2,  # computing with the CSR type (products, solver row batches)
    "yambda_dl.retrieval": 2,  # the exact top-k kernel and its per-user masks
    "yambda_dl.models": 3,
    "yambda_dl.eval": 4,  # recommend every user, the metrics, the evaluator, external runs
    "yambda_dl.train": 5,
    "yambda_dl.report": 5,
    "yambda_dl.tune": 5,  # Optuna studies, best files, tune-then-retrain
    "yambda_dl.paper": 5,
    "yambda_dl.api": 5,
    "yambda_dl.config_check": 5,
    "yambda_dl": 5,  # the package's own __init__: the notebook API, loaded on first use
}

# (importing module, imported module) -> why a lower layer imports a higher one; there is none, and each new entry
# must say why it cannot be avoided
ALLOWED: dict[tuple[str, str], str] = {}


def layer(module: str) -> int | None:
    """The layer of the longest LAYERS prefix of `module` (the bare package name claims only its own __init__)."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return LAYERS[name]
    return LAYERS.get(module)


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, package: Path) -> bool:
    relative = Path(*name.split("."))
    return (package.parent / relative).with_suffix(".py").is_file() or (package.parent / relative).is_dir()


def imported_modules(path: Path, package: Path) -> list[tuple[str, int]]:
    """(module, line) of every import of the package in `path`, at any depth (lazy imports in functions too).

    `from a.b import c` counts as an import of a.b.c when c is a submodule, else of a.b; relative imports are
    resolved against the importing module's package.
    """
    name = module_name(path, package)
    own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = own_package.split(".")[: len(own_package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if is_module(sub, package) else base, node.lineno))
    root = package.name
    return [(module, line) for module, line in dict.fromkeys(found) if module == root or module.startswith(root + ".")]


def violations(package: Path) -> list[str]:
    """Every import of a higher layer under `package`, and every module no layer claims."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        importer = module_name(path, package)
        own = layer(importer)
        if own is None:
            problems.append(f"{importer}: in no layer; add it to LAYERS in tests/test_layering.py")
            continue
        for imported, line in imported_modules(path, package):
            theirs = layer(imported)
            if theirs is not None and theirs > own and (importer, imported) not in ALLOWED:
                problems.append(
                    f"{path.relative_to(package.parent)}:{line}: {importer} (layer {own}) imports {imported} "
                    f"(layer {theirs})"
                )
    return problems


def test_no_module_imports_from_a_higher_layer():
    problems = violations(PACKAGE)
    assert not problems, "imports against the layers (docs/architecture.md, Layers):\n" + "\n".join(problems)


def test_allowed_exceptions_are_still_needed():
    """An ALLOWED entry whose import is gone must go too, so that the list stays the truth."""
    imports = {
        (module_name(path, PACKAGE), imported)
        for path in PACKAGE.rglob("*.py")
        for imported, _ in imported_modules(path, PACKAGE)
    }
    assert not set(ALLOWED) - imports


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from yambda_dl.eval.recommend import recommend_all\n", "imports yambda_dl.eval.recommend (layer 4)"),
        ("def f():\n    from yambda_dl import eval as e\n", "imports yambda_dl.eval (layer 4)"),
        ("import yambda_dl.models.base\n", "imports yambda_dl.models.base (layer 3)"),
        ("from ..models import base\n", "imports yambda_dl.models.base (layer 3)"),
    ],
)
def test_the_check_finds_an_upward_import_in_any_form(tmp_path, source, expected):
    package = tmp_path / "yambda_dl"
    for folder in ("data", "models", "eval"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "models" / "base.py").write_text("")
    (package / "eval" / "recommend.py").write_text("")
    (package / "data" / "views.py").write_text(source)
    problems = violations(package)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_check_refuses_a_module_in_no_layer(tmp_path):
    package = tmp_path / "yambda_dl"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "newthing.py").write_text("")
    assert violations(package) == ["yambda_dl.newthing: in no layer; add it to LAYERS in tests/test_layering.py"]
