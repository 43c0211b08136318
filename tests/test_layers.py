"""Lower layers never import higher ones, at module level or inside a function (see docs/architecture.md)."""

import ast
from pathlib import Path

import selfsup

LAYERS = ["errors", "fileio", "metafiles", "config", "schedules", "metrics", "data", "models", "losses", "methods",
          "engine", "saliency", "eval", "experiments", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}
ROOT = Path(selfsup.__file__).parent


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "selfsup" else ""


def _upward_imports(targets=None):
    """Every import, at module level or inside a function, of a higher layer (only the layers in ``targets``, when
    given): ``from selfsup.x import y`` counts both ``selfsup.x`` and ``selfsup.x.y``."""
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        own = _layer(".".join(rel.parts))
        if own not in RANK:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                dep = _layer(name)
                if dep in RANK and RANK[dep] > RANK[own] and (targets is None or dep in targets):
                    bad.append(f"{rel}: imports {name}")
    return bad


def test_no_upward_imports():
    bad = _upward_imports()
    assert not bad, "\n".join(bad)


def test_losses_depend_on_torch_only():
    for path in (ROOT / "losses").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("selfsup"):
                assert node.module.startswith("selfsup.losses"), f"{path.name} imports {node.module}"


def test_feature_packages_are_imported_from_above_only():
    """``saliency`` (above engine) and ``experiments`` (above eval) are never imported by a lower layer, not even
    inside a function: pretraining reads the saliency masks through ``selfsup.data.masks`` only."""
    bad = _upward_imports(("saliency", "experiments"))
    assert not bad, "\n".join(bad)
