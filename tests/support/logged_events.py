"""The event names the code really logs, read from its syntax tree (not from the registry in events.py).

Patterns the service uses, each resolved to constant names:
- a dict literal with an `"event"` key (the `extra=` of a log call, or a dict built before it): a string
  constant, `Event.<name>`, a parameter of the enclosing function (resolved from every call of that
  function in the package: positional or keyword constants), or an f-string `f"{param}_suffix"` whose
  placeholder is such a parameter;
- `timed("<name>", ...)` (log.py), whose own dict holds its `event` parameter.
Anything else is reported as unresolved, so a new pattern fails the test instead of hiding a name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "functions" / "nano_banana"


# Functions that build API response bodies with an `event` field (not log lines).
RESPONSE_BODIES = frozenset({"render_webhook"})


@dataclass
class Scan:
    names: dict[str, set[str]] = field(default_factory=dict)  # event name -> "file:line" where logged
    unresolved: list[str] = field(default_factory=list)

    def add(self, name: str, where: str) -> None:
        self.names.setdefault(name, set()).add(where)


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        yield rel, ast.parse(path.read_text(), filename=rel)
    main = ROOT / "functions" / "main.py"
    yield "functions/main.py", ast.parse(main.read_text())


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _enclosing_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.FunctionDef | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef):
            return node
    return None


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _constant(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Event":
        return node.attr
    return None


def _parameters(function: ast.FunctionDef) -> set[str]:
    a = function.args
    return {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs}


def _argument_values(
    trees: list[tuple[str, ast.Module]], function: ast.FunctionDef, param: str, depth: int = 0
) -> list[str] | None:
    """Every constant passed as `param` to calls of `function` anywhere in the package, following a
    parameter passed on by the caller (None: one was not a constant, so the names cannot be known)."""
    if depth > 5:
        return None
    names = [a.arg for a in function.args.posonlyargs + function.args.args]
    position = names.index(param) if param in names else None
    if position is not None and names and names[0] in ("self", "cls"):
        position -= 1
    values: list[str] = []
    for _, tree in trees:
        parents = _parents(tree)
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call) or _callee(call) != function.name:
                continue
            given: ast.AST | None = None
            for keyword in call.keywords:
                if keyword.arg == param:
                    given = keyword.value
            if given is None and position is not None and position < len(call.args):
                given = call.args[position]
            if given is None:
                continue  # the parameter's default applies; a default of a constant is handled below
            value = _constant(given)
            if value is not None:
                values.append(value)
                continue
            caller = _enclosing_function(call, parents)
            if not isinstance(given, ast.Name) or caller is None or given.id not in _parameters(caller):
                return None
            passed_on = _argument_values(trees, caller, given.id, depth + 1)
            if passed_on is None:
                return None
            values += passed_on
    return values


def scan(sources: dict[str, str] | None = None) -> Scan:
    """The package's logged event names (or those of `sources`, file name -> code, for testing)."""
    trees = list(_sources()) if sources is None else [(n, ast.parse(c)) for n, c in sources.items()]
    result = Scan()
    for rel, tree in trees:
        parents = _parents(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _callee(node) == "timed" and node.args:
                name = _constant(node.args[0])
                if name is None:
                    result.unresolved.append(f"{rel}:{node.lineno}: timed() with a non-constant name")
                else:
                    result.add(name, f"{rel}:{node.lineno}")
            # x["event"] = "name" (a timed() dict renamed), d.update(event="name"), dict(event="name")
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Subscript) and _constant(target.slice) == "event":
                        _add_value(result, trees, parents, node, node.value, f"{rel}:{node.lineno}")
            if isinstance(node, ast.Call) and _callee(node) in ("update", "dict"):
                for keyword in node.keywords:
                    if keyword.arg == "event":
                        _add_value(result, trees, parents, node, keyword.value, f"{rel}:{node.lineno}")
            if not isinstance(node, ast.Dict):
                continue
            for key, value in zip(node.keys, node.values, strict=True):
                if not (isinstance(key, ast.Constant) and key.value == "event"):
                    continue
                function = _enclosing_function(node, parents)
                if function is not None and function.name == "timed" and rel.endswith("log.py"):
                    continue  # timed()'s own dict: its names are the timed("...") calls above
                if function is not None and function.name in RESPONSE_BODIES:
                    continue  # an API body whose field is named `event` (a webhook delivery's), not a log line
                _add_value(result, trees, parents, node, value, f"{rel}:{node.lineno}")
    return result


def _add_value(
    result: Scan,
    trees: list[tuple[str, ast.Module]],
    parents: dict[ast.AST, ast.AST],
    node: ast.AST,
    value: ast.AST,
    where: str,
) -> None:
    """Record the names an `event` value stands for, or report it as unresolved."""
    constant = _constant(value)
    if constant is not None:
        result.add(constant, where)
        return
    if isinstance(value, ast.IfExp):  # "job_replayed" if replayed else "job_created"
        _add_value(result, trees, parents, node, value.body, where)
        _add_value(result, trees, parents, node, value.orelse, where)
        return
    function = _enclosing_function(node, parents)
    suffix = ""
    param: str | None = None
    if isinstance(value, ast.Name):
        param = value.id
    elif (
        isinstance(value, ast.JoinedStr)
        and len(value.values) == 2
        and isinstance(value.values[0], ast.FormattedValue)
        and isinstance(value.values[0].value, ast.Name)
        and _constant(value.values[1]) is not None
    ):
        param = value.values[0].value.id
        suffix = str(_constant(value.values[1]))
    values = (
        _argument_values(trees, function, param)
        if function is not None and param and param in _parameters(function)
        else None
    )
    if not values:
        result.unresolved.append(f"{where}: event {ast.unparse(value)} cannot be resolved to names")
        return
    for v in values:
        result.add(f"{v}{suffix}", where)
