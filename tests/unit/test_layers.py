"""The package layout is the architecture; these contracts keep it so (kopf's import-linter, in a test)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "portero"
PURE = [
    "supervisor/decide.py",
    "health/verdict.py",
    "health/service.py",
    "replicas.py",
    "events.py",
    "revisions.py",
    "spec/models.py",
    "router/target.py",
    "router/balancer.py",
    "router/health.py",
    "router/outlier.py",
    "router/breaker.py",
    "router/budget.py",
    "router/stats.py",
    "router/routes.py",
    "monitor/series.py",
    "monitor/alerts.py",
    "monitor/rules.py",
    "monitor/notify.py",
    "monitor/alertmanager.py",
    "monitor/traffic.py",
    "monitor/window.py",
    "monitor/record.py",
    "monitor/snapshot.py",
    "monitor/appmetrics.py",
    "cluster/lease.py",
    "cluster/registry.py",
    "cluster/local.py",
    "runtimes/nodes.py",
    "deploy/model.py",
    "deploy/strategy.py",
    "deploy/analysis.py",
    "autoscale/decide.py",
    "spec/changes.py",
]
IO_MODULES = {"asyncio", "psutil", "docker", "httpx", "subprocess", "socket", "sqlite3", "time", "redis"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


# The router's request path is one object graph (a connection, its exchanges, their upstreams, the router that
# owns them): each side holds a reference to the other, typed by a TYPE_CHECKING import that never runs (mypyc
# compiles them as one group). No other import may close a circle, at module level, under TYPE_CHECKING or in a
# function. Each allowed edge, with why:
TYPING_ONLY = {
    ("router.burst", "router.server"): "a held write asks the router to flush it at the end of the pass",
    ("router.client", "router.server"): "a client connection is accepted by, and reports to, its router",
    ("router.client", "router.service"): "a client connection admits its request to the service it routes to",
    ("router.client", "router.upstream"): "a tunnel (101) pipes the client connection into the upstream one",
    ("router.exchange", "router.client"): "an exchange writes its response to the client connection",
    ("router.exchange", "router.service"): "an exchange asks its service for an endpoint and reports to it",
    ("router.server", "router.exchange"): "the router's connector and trace take the exchange that asks",
    ("router.service", "router.exchange"): "a service queues exchanges that wait for an endpoint",
    ("router.service", "router.server"): "a service route belongs to its router (settings, clock, events)",
    ("router.upstream", "router.exchange"): "an upstream connection feeds the response to the exchange it serves",
}


def module_graph() -> dict[str, dict[str, bool]]:
    """portero's modules -> the modules they import -> whether only for typing (inside `if TYPE_CHECKING`)."""
    modules = {p.relative_to(SRC).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__"): p
               for p in SRC.rglob("*.py")}  # fmt: skip
    graph: dict[str, dict[str, bool]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)
        }
        edges = graph.setdefault(name, {})
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in (t.removeprefix("portero.") for t in targets if t.startswith("portero.")):
                if target in modules and target != name:
                    edges[target] = edges.get(target, True) and id(node) in typing
    return graph


def cycles(graph: dict[str, dict[str, bool]]) -> list[set[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_but_the_routers_typing_only_ones():
    graph = module_graph()
    assert all(graph[a].get(b) is True for a, b in TYPING_ONLY), "an allowed edge is no longer typing-only"
    inside = [(a, b) for group in cycles(graph) for a in group for b, only in graph[a].items() if b in group and only]
    assert sorted(inside) == sorted(TYPING_ONLY), "every typing-only edge of the circle is justified, and only those"
    for a, b in TYPING_ONLY:
        del graph[a][b]
    assert cycles(graph) == []


def test_the_import_circle_check_finds_one():
    assert cycles({"a": {"b": False}, "b": {"c": True}, "c": {"a": False}, "d": {}}) == [{"a", "b", "c"}]


@pytest.mark.parametrize("module", PURE)
def test_decision_code_does_no_io_and_reads_no_clock(module):
    found = {name.split(".")[0] for name in imports(SRC / module)}
    assert not found & IO_MODULES, f"{module} imports {found & IO_MODULES}: decisions take facts and `now` as inputs"


HOST_READER = "monitor/host.py"  # the monitor's view of the host and of portero itself, never of a replica


def test_only_runtimes_touch_processes_and_engines():
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith("runtimes/"):
            continue
        if relative == HOST_READER:
            assert "docker" not in {name.split(".")[0] for name in imports(path)}
            continue
        found = {name.split(".")[0] for name in imports(path)} & {"psutil", "docker"}
        assert not found, f"{relative} imports {found}; only portero.runtimes may"


def test_the_shim_imports_nothing_from_portero():
    assert not [name for name in imports(SRC / "runtimes" / "shim.py") if name.startswith("portero")]


def test_the_resilience_module_for_apps_imports_nothing_else_of_portero():
    for path in (SRC / "resilience").rglob("*.py"):
        found = [n for n in imports(path) if n.startswith("portero") and not n.startswith("portero.resilience")]
        assert not found, f"{path.name} imports {found}: apps import portero.resilience without portero's daemon"


MAX_FUNCTION_LINES = 60  # issue 17: a function the next engineer can read whole (STYLE.md: the median is 5-9)


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, line, length) of every function longer than `limit` lines, from its `def` to its last line; a
    nested function counts in the one it is in as well."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def test_the_length_measure_counts_from_def_to_the_last_line():
    def body(lines: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(lines))

    assert long_functions(f"@decorated\ndef short():\n{body(59, '    ')}") == []  # 60 lines with its `def`
    assert long_functions(f"class A:\n    async def long(self):\n{body(60, '        ')}") == [("long", 2, 61)]
    nested = f"def outer():\n    def inner():\n{body(30, '        ')}{body(30, '    ')}"
    assert long_functions(nested) == [("outer", 1, 62)]  # inner's 31 lines count in outer's


def test_no_function_in_src_is_over_60_lines():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        found += [
            f"{relative}:{line} {name} ({length} lines)" for name, line, length in long_functions(path.read_text())
        ]
    assert not found, f"over {MAX_FUNCTION_LINES} lines: {found}; split them (one job each)"


def positional_flags(source: str) -> list[tuple[str, int, str]]:
    """(function, line, parameter) of every parameter annotated `bool` (or `bool | None`, or `Annotated[bool,
    ...]` as Typer and FastAPI take them) that a caller can pass by position."""

    def is_flag(annotation: ast.expr | None) -> bool:
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            annotation = ast.parse(annotation.value, mode="eval").body
        if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) in ("Annotated", "typing.Annotated"):
            annotation = annotation.slice.elts[0] if isinstance(annotation.slice, ast.Tuple) else annotation.slice
        return annotation is not None and ast.unparse(annotation) in ("bool", "bool | None", "Optional[bool]")

    return sorted(
        (node.name, node.lineno, arg.arg)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for arg in (*node.args.posonlyargs, *node.args.args)
        if is_flag(arg.annotation)
    )


def test_the_flag_check_finds_positional_flags_only():
    source = (
        "def f(a: int, b: bool, *, c: bool) -> bool: ...\n"
        "class C:\n    async def g(self, d: 'bool | None' = None, *e: bool, **f: bool) -> None: ...\n"
        "def h(g: Annotated[bool, Option('--g')] = False, *, i: Annotated[bool, Query()] = False) -> None: ...\n"
    )
    assert positional_flags(source) == [("f", 1, "b"), ("g", 3, "d"), ("h", 4, "g")]  # c, e, f and i cannot be


def test_flags_are_keyword_only():
    """STYLE.md: a call reads `record_check(replica, policy, now, ok=True)`, never `record_check(r, True, p, n)`."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        found += [f"{relative}:{line} {name}({arg})" for name, line, arg in positional_flags(path.read_text())]
    assert not found, f"flags a caller can pass by position: {found}; put them after `*`"
