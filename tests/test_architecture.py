"""The layout's rules, read from the source: no import cycle between modules, the product never
imports the doubles, the session never speaks a service's protocol, and modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
# Over this many lines a module must say at its top why it is one unit.
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in APP.rglob("*.py"):
        parts = path.relative_to(APP.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The app modules `path` imports at module level (imports inside functions are lazy on
    purpose, and those under TYPE_CHECKING never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for statement in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                  ast.ClassDef)) else ():
            if isinstance(statement, ast.Import):
                names.update(alias.name for alias in statement.names)
            elif isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
                names.add(statement.module)
                names.update(f"{statement.module}.{alias.name}" for alias in statement.names)
    return {name for name in names if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target] if target in trail else [node, target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # A package importing its own submodules is not a cycle of units.
    real = [c for c in cycles if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert real == []


def test_the_product_never_imports_the_doubles():
    offenders = {name for name, targets in graph().items()
                 if not name.startswith("app.simulators") and any(t.startswith("app.simulators") for t in targets)}
    assert offenders == set()


def test_the_agent_and_the_channels_know_no_service_protocol():
    for name, targets in graph().items():
        if name.startswith(("app.agent", "app.channels")):
            assert not any(t.startswith(("app.engines.openai_realtime", "app.engines.gpt_live")) for t in targets), name
            source = modules()[name].read_text(encoding="utf-8")
            assert "input_audio_buffer" not in source and "response.create" not in source, name


def test_modules_fit_in_a_head():
    too_long = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES and "one unit because" not in text[:3000]:
            too_long.append((name, text.count("\n")))
    assert too_long == []


def test_the_rules_see_real_imports():
    """The checks above would pass on an empty graph: make sure they read the code."""
    edges = graph()
    assert "app.engines.contract" in edges["app.agent.session"]
    assert "app.channels.contract" in edges["app.channels.twilio.line"]
