"""The package's layers, read from its import graph: jobs -> model -> engine/parallel/sharding -> data.

Every ``import`` counts, at module level or inside a function, so a deferred import cannot
hide an edge."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cliper_dist"
JOBS = {"train", "encode", "adapt", "pretrain", "convert"}  # the stages: only entry points import them
# what each library layer must not import (besides the jobs)
BELOW = {"data": {"model", "parallel", "sharding"}, "parallel": {"model", "data", "sharding"},
         "sharding": {"model", "data"}, "model": set()}


def imported(path: Path) -> set[str]:
    """The cliper_dist modules ``path`` imports, as dotted names."""
    names = set()
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.update([base] + [f"{base}.{alias.name}" for alias in node.names])
    return {n for n in names if n.startswith("cliper_dist.")}


def subpackage(name: str) -> str:
    return name.split(".")[1]


def test_library_layers_do_not_import_the_jobs_or_layers_above():
    offences = []
    for layer, above in BELOW.items():
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for name in imported(path):
                if subpackage(name) in JOBS | above:
                    offences.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offences, "\n".join(offences)


def test_the_graph_is_read_whole():
    """The check above sees deferred imports and the reference models (a guard on ``imported``)."""
    assert "cliper_dist.model.lightgcn" in imported(PACKAGE / "model" / "registry.py")
    assert "cliper_dist.data.recdata" in imported(PACKAGE / "model" / "reference" / "base.py")
    assert "cliper_dist.train.job" in imported(PACKAGE.parent / "launch" / "train.py")
