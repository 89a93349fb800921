"""The package's layers, as docs/developing.md draws them: each module imports only from the layers below its own (and,
within a layer, `a -> b` lets a import b); every module is drawn."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def drawing() -> list[str]:
    page = (ROOT / "docs" / "developing.md").read_text()
    block = page[page.index("```\ncli ") + 4 :]
    return block[: block.index("```")].strip().split("\n")


def files(path: Path) -> list[Path]:
    """A module's source: its file, or a package's files (diffedu/check/)."""
    return sorted(path.glob("*.py")) if path.is_dir() else [path]


def imports(path: Path) -> set[str]:
    """The diffedu modules a module (or package) imports, at the top or inside a function."""
    found, level = set(), 2 if path.is_dir() else 1  # in a package, diffedu's modules are `..name`
    for node in (n for file in files(path) for n in ast.walk(ast.parse(file.read_text()))):
        if isinstance(node, ast.ImportFrom) and node.level == level:
            found |= {a.name for a in node.names} if node.module is None else {node.module.split(".")[0]}
    return found


def test_each_module_imports_only_from_the_layers_below_it():
    layer, allowed = {}, set()
    for depth, line in enumerate(drawing()):
        names = line[:37].strip()
        for chain in names.split(", "):
            parts = chain.split(" -> ")
            allowed |= {(a, b) for i, a in enumerate(parts) for b in parts[i + 1 :]}
            layer |= {name: depth for name in parts}
    modules = {p.stem: p for p in (ROOT / "diffedu").glob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {p.parent.name: p.parent for p in (ROOT / "diffedu").glob("*/__init__.py")}
    assert set(modules) == set(layer), "docs/developing.md's drawing and the package's modules differ"
    upward = [
        (name, other)
        for name, path in modules.items()
        for other in imports(path) & set(modules)
        if layer[other] < layer[name] or (layer[other] == layer[name] and (name, other) not in allowed)
    ]
    assert upward == [], f"imports against the layers: {upward}"
    sources = "\n".join(f.read_text() for p in modules.values() for f in files(p))
    assert not re.search(r"^(from|import) (lessons|tests)\b", sources, re.M)
