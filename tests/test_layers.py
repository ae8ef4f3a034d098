"""The architecture, checked from the imports: rooms layered one way, no cycles, no torch in the
bot.

Every import counts, including those inside functions and under `TYPE_CHECKING`: a lazy import
that runs back up is still a layering fault. The rooms and their order are the ones each
package's `__init__.py` describes; the README's layout table says the same in prose.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("bot", "model", "loopback_discord")

# Bottom first. A module may import its own room and any room below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("model.contracts",),
    ("bot.settings",),
    ("bot.store",),
    ("bot.community",),
    ("bot.runners",),
    ("bot.training",),
    ("bot.services",),
    ("bot.discord_app",),
    ("bot.app", "bot.cli", "bot.sandbox"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imported_names(path: Path, name: str) -> Iterator[str]:
    """Every module name `path` imports, relative imports resolved, `from x import y` as x.y
    when x.y is a module (the caller filters what exists)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def project_imports() -> dict[str, set[str]]:
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path, name):
            # the longest project module that the imported name is, or lies in
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def third_party(path: Path) -> set[str]:
    return {n.split(".")[0] for n in imported_names(path, module_name(path))}


def layer_of(module: str) -> int | None:
    for rank, rooms in enumerate(LAYERS):
        if any(module == room or module.startswith(room + ".") for room in rooms):
            return rank
    return None


def layering_faults(graph: dict[str, set[str]]) -> list[str]:
    faults = []
    for source, targets in sorted(graph.items()):
        source_rank = layer_of(source)
        if source_rank is None:
            continue
        for target in sorted(targets):
            target_rank = layer_of(target)
            if target_rank is not None and target_rank > source_rank:
                faults.append(f"{source} (layer {source_rank}) imports {target} ({target_rank})")
    return faults


def test_every_bot_module_lives_in_a_room():
    loose = [m for m in project_modules() if m.startswith("bot.") and layer_of(m) is None]
    assert loose == []


def test_no_lower_room_imports_a_higher_one():
    assert layering_faults(project_imports()) == []


def test_the_layer_check_catches_an_import_that_runs_back_up():
    graph = {"bot.store.database": {"bot.discord_app.client"}, "bot.discord_app.client": set()}
    assert layering_faults(graph) == [
        "bot.store.database (layer 2) imports bot.discord_app.client (7)"
    ]


def test_no_import_cycles():
    graph = project_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_model_side_never_imports_the_bot_side():
    graph = project_imports()
    wrong = {m: sorted(t for t in ts if t.startswith("bot")) for m, ts in graph.items()}
    assert {m: ts for m, ts in wrong.items() if m.startswith("model") and ts} == {}


def test_the_community_rules_and_the_store_import_nothing_of_discord():
    modules = project_modules()
    for name, path in modules.items():
        if name.startswith(("bot.community", "bot.store", "bot.runners", "bot.training")):
            assert "discord" not in third_party(path), name


def test_no_module_imports_both_discord_and_torch():
    for name, path in project_modules().items():
        assert not {"discord", "torch"} <= third_party(path), name


def test_the_bot_uses_only_the_loopback_stand_ins_public_api():
    """`jokebot run` and the sandbox need nothing of the stand-in's private modules."""
    graph = project_imports()
    private = {
        source: sorted(t for t in targets if t.startswith("loopback_discord._"))
        for source, targets in graph.items()
        if source.startswith("bot")
    }
    assert {source: found for source, found in private.items() if found} == {}


def test_no_test_module_imports_another():
    """What tests share lives in tests/helpers.py (or conftest fixtures): importing a test
    module runs its module-level code and ties one test file's fate to another's."""
    found = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        name = module_name(path)
        imports = {n for n in imported_names(path, name) if n.startswith("tests.test_")}
        test_modules = {n.split(".")[1] for n in imports}
        if test_modules:
            found[name] = sorted(test_modules)
    assert found == {}
