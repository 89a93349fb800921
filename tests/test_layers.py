"""The package's layers, as docs/developing.md draws them: each module imports only from the layers below its own (and,
within a layer, `a -> b` lets a import b); every module is drawn."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def drawing() -> list[str]:
    page = (ROOT / "docs" / "developing.md").read_text()
    block = page[page.index("```\ncli ") + 4:]
    return block[: block.index("```")].strip().split("\n")


def imports(path: Path) -> set[str]:
    """The diffedu modules a module imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {a.name for a in node.names} if node.module is None else {node.module.split(".")[0]}
    return found


def test_each_module_imports_only_from_the_layers_below_it():
    layer, allowed = {}, set()
    for depth, line in enumerate(drawing()):
        names = line[:37].strip()
        for chain in names.split(", "):
            parts = chain.split(" -> ")
            allowed |= {(a, b) for i, a in enumerate(parts) for b in parts[i + 1:]}
            layer |= {name: depth for name in parts}
    modules = {p.stem: p for p in (ROOT / "diffedu").glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert set(modules) == set(layer), "docs/developing.md's drawing and the package's modules differ"
    upward = [(name, other) for name, path in modules.items() for other in imports(path) & set(modules)
              if layer[other] < layer[name] or (layer[other] == layer[name] and (name, other) not in allowed)]
    assert upward == [], f"imports against the layers: {upward}"
    assert not re.search(r"^(from|import) (lessons|tests)\b", "\n".join(p.read_text() for p in modules.values()), re.M)
