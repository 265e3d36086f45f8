"""The package's shape: no import cycle between any two of its modules.

The tiers themselves (which may import which) are import-linter contracts in
pyproject.toml, checked by ``make lint``; a cycle inside a tier is not something a
layers contract sees, so it is checked here.
"""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter, in the [lint] extra")


def _cycles(graph) -> list[list[str]]:
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(imports[module]):
            if other not in imports:
                continue
            if state.get(other) == 1:
                found.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, path)
        path.pop()
        state[module] = 2

    for module in sorted(imports):
        if module not in state:
            visit(module, [])
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert _cycles(grimp.build_graph("nmp_peer")) == []


def test_the_check_finds_a_cycle(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyc import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("cyc")) == [["cyc.a", "cyc.b", "cyc.a"]]
