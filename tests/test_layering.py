"""The import-direction rules of DESIGN.md, checked on the source tree.

Every ``.py`` file under ``dfs/``, ``fuse/`` and ``cli/`` is parsed (never
imported) and each ``import`` / ``from ... import`` statement, wherever it
sits (functions and ``if TYPE_CHECKING:`` blocks included), is checked
against the rules in ``RULES``. ``importlib.import_module("literal")`` and
``__import__("literal")`` count as imports too. A second test checks that
``pyproject.toml`` lists every package directory, since an editable install
imports unlisted subpackages fine and only a regular install loses them.

Caveat: imports built from non-literal strings are invisible to this check.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Source folder -> the import name it is installed under (pyproject package-dir).
SOURCE_ROOTS = {"dfs": "vmstore.dfs", "fuse": "vmstore.fuse", "cli": "vmstore.cli"}


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repo, e.g. "dfs/master/main.py"
    lineno: int
    module: str  # absolute dotted name of what is imported ("" if relative)
    statement: str  # the source text, for messages
    level: int = 0  # > 0 for a relative import

    def where(self) -> str:
        return f"{self.path}:{self.lineno}: {self.statement}"


def _python_files() -> Iterator[Path]:
    for root in SOURCE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def _module_exists(dotted: str) -> bool:
    """Whether a vmstore.* name is a module or package in this tree."""
    for root, prefix in SOURCE_ROOTS.items():
        if dotted == prefix or dotted.startswith(prefix + "."):
            rel = Path(root, *dotted[len(prefix) :].split(".")[1:])
            return (REPO / rel).with_suffix(".py").is_file() or (
                REPO / rel / "__init__.py"
            ).is_file()
    return False


def _literal_import_call(node: ast.Call) -> str | None:
    func = node.func
    is_import_module = (
        isinstance(func, ast.Attribute)
        and func.attr == "import_module"
        and isinstance(func.value, ast.Name)
        and func.value.id == "importlib"
    ) or (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
    if not is_import_module or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _imports_in(path: Path) -> list[Import]:
    return parse_imports(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())


def parse_imports(source: str, rel: str) -> list[Import]:
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as exc:
        pytest.fail(f"{rel}:{exc.lineno}: cannot parse: {exc.msg}", pytrace=False)
    lines = source.splitlines()

    def text(node: ast.AST) -> str:
        return lines[node.lineno - 1].strip()

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(rel, node.lineno, alias.name, text(node)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(Import(rel, node.lineno, node.module or "", text(node), node.level))
                continue
            assert node.module is not None
            for alias in node.names:
                # `from vmstore.dfs import master` imports vmstore.dfs.master.
                sub = f"{node.module}.{alias.name}"
                module = sub if _module_exists(sub) else node.module
                found.append(Import(rel, node.lineno, module, text(node)))
        elif isinstance(node, ast.Call):
            name = _literal_import_call(node)
            if name is not None:
                found.append(Import(rel, node.lineno, name, text(node)))
    return found


_ALL_IMPORTS: list[Import] | None = None


def all_imports() -> list[Import]:
    global _ALL_IMPORTS
    if _ALL_IMPORTS is None:
        _ALL_IMPORTS = [imp for path in _python_files() for imp in _imports_in(path)]
    return _ALL_IMPORTS


def _under(name: str, *prefixes: str) -> bool:
    """Whether dotted *name* is one of *prefixes* or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _in_dir(path: str, *dirs: str) -> bool:
    return any(path.startswith(d.rstrip("/") + "/") for d in dirs)


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    applies_to: Callable[[str], bool]  # file path (repo-relative) -> checked?
    forbidden: Callable[[str], bool]  # imported module name -> violation?


def _vmstore_outside(*allowed: str) -> Callable[[str], bool]:
    # The bare namespace packages carry no code a layer could depend on.
    return lambda m: (
        _under(m, "vmstore") and m not in ("vmstore", "vmstore.dfs") and not _under(m, *allowed)
    )


RULES = [
    Rule(
        "dfs-no-fuse-cli-testing",
        "dfs/ never imports vmstore.fuse, vmstore.cli, pyfuse3 or vmstore.dfs.testing "
        "(dfs/testing/ itself excepted)",
        lambda p: _in_dir(p, "dfs") and not _in_dir(p, "dfs/testing"),
        lambda m: _under(m, "vmstore.fuse", "vmstore.cli", "pyfuse3", "vmstore.dfs.testing"),
    ),
    Rule(
        "testing-no-fuse-cli",
        "dfs/testing/ may import any vmstore.dfs module, but, as the rest of dfs/, never "
        "vmstore.fuse, vmstore.cli or pyfuse3",
        lambda p: _in_dir(p, "dfs/testing"),
        lambda m: _under(m, "vmstore.fuse", "vmstore.cli", "pyfuse3"),
    ),
    Rule(
        "master-not-chunkserver",
        "dfs/master/ never imports vmstore.dfs.chunkserver",
        lambda p: _in_dir(p, "dfs/master"),
        lambda m: _under(m, "vmstore.dfs.chunkserver"),
    ),
    Rule(
        "chunkserver-not-master",
        "dfs/chunkserver/ never imports vmstore.dfs.master",
        lambda p: _in_dir(p, "dfs/chunkserver"),
        lambda m: _under(m, "vmstore.dfs.master"),
    ),
    Rule(
        "daemons-not-client",
        "dfs/master/ and dfs/chunkserver/ never import vmstore.dfs.client or vmstore.dfs.migration",
        lambda p: _in_dir(p, "dfs/master", "dfs/chunkserver"),
        lambda m: _under(m, "vmstore.dfs.client", "vmstore.dfs.migration"),
    ),
    Rule(
        "client-below-daemons",
        "dfs/client/ never imports vmstore.dfs.{master,chunkserver,metadata,migration}: "
        "it reaches the daemons only through vmstore.dfs.protocol",
        lambda p: _in_dir(p, "dfs/client"),
        lambda m: _under(
            m,
            "vmstore.dfs.master",
            "vmstore.dfs.chunkserver",
            "vmstore.dfs.metadata",
            "vmstore.dfs.migration",
        ),
    ),
    Rule(
        "migration-over-client",
        "dfs/migration/ never imports vmstore.dfs.{master,chunkserver,metadata}: "
        "it drives the cluster through vmstore.dfs.client",
        lambda p: _in_dir(p, "dfs/migration"),
        lambda m: _under(
            m, "vmstore.dfs.master", "vmstore.dfs.chunkserver", "vmstore.dfs.metadata"
        ),
    ),
    Rule(
        "metadata-sync-offline",
        "dfs/metadata/ is synchronous and offline: no trio, no network, no "
        "master/chunkserver/client, no protocol transport or rpc",
        lambda p: _in_dir(p, "dfs/metadata"),
        lambda m: _under(
            m,
            "trio",
            "socket",
            "ssl",
            "asyncio",
            "vmstore.dfs.master",
            "vmstore.dfs.chunkserver",
            "vmstore.dfs.client",
            "vmstore.dfs.protocol.transport",
            "vmstore.dfs.protocol.rpc",
            "vmstore.dfs.protocol.connection",
            "vmstore.dfs.protocol.frames",
        ),
    ),
    Rule(
        "protocol-bottom",
        "dfs/protocol/ imports from vmstore only vmstore.dfs.{protocol,types,constants,errors,"
        "log_fields}",
        lambda p: _in_dir(p, "dfs/protocol"),
        _vmstore_outside(
            "vmstore.dfs.protocol",
            "vmstore.dfs.types",
            "vmstore.dfs.constants",
            "vmstore.dfs.errors",
            "vmstore.dfs.log_fields",
        ),
    ),
    Rule(
        "fuse-thin",
        "fuse/ imports from vmstore only vmstore.fuse, vmstore.dfs.{client,types,errors,"
        "constants,metrics,log_fields} and vmstore.dfs.protocol.messages",
        lambda p: _in_dir(p, "fuse"),
        _vmstore_outside(
            "vmstore.fuse",
            "vmstore.dfs.client",
            "vmstore.dfs.types",
            "vmstore.dfs.errors",
            "vmstore.dfs.constants",
            "vmstore.dfs.metrics",
            "vmstore.dfs.log_fields",
            "vmstore.dfs.protocol.messages",
        ),
    ),
    Rule(
        "libvirt-migration-only",
        "only dfs/migration/ imports libvirt",
        lambda p: not _in_dir(p, "dfs/migration"),
        lambda m: _under(m, "libvirt"),
    ),
    Rule(
        "vmstore-namespace",
        "our code is imported through the vmstore namespace, never as top-level "
        "dfs, fuse or cli (a bare `fuse` is fuse-python's module)",
        lambda p: True,
        lambda m: _under(m, *SOURCE_ROOTS),
    ),
]


def _fail_if(problems: list[str], header: str) -> None:
    if problems:
        pytest.fail(header + ":\n  " + "\n  ".join(problems), pytrace=False)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_import_rule(rule: Rule) -> None:
    violations = [
        imp.where()
        for imp in all_imports()
        if imp.level == 0 and rule.applies_to(imp.path) and rule.forbidden(imp.module)
    ]
    _fail_if(violations, f"rule broken: {rule.name}")


def test_no_relative_imports() -> None:
    # Relative imports would hide the target's absolute name from the rules above.
    violations = [imp.where() for imp in all_imports() if imp.level > 0]
    _fail_if(violations, "relative imports (write `from vmstore.dfs... import ...`)")


def test_checker_sees_imports() -> None:
    # Guard against the walk silently finding nothing (a moved folder, say).
    files = list(_python_files())
    assert any(p.relative_to(REPO).as_posix() == "dfs/__init__.py" for p in files)
    assert any(_under(imp.module, "vmstore.dfs") for imp in all_imports())


def _pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_package_dir_mapping() -> None:
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {prefix: root for root, prefix in SOURCE_ROOTS.items()}


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {}
    for root, prefix in SOURCE_ROOTS.items():
        for init in sorted((REPO / root).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO / root)
            name = ".".join([prefix, *rel.parts])
            on_disk[name] = init.parent.relative_to(REPO).as_posix() + "/"
    problems = [
        f"{path}: package {name} missing from [tool.setuptools] packages in pyproject.toml"
        for name, path in sorted(on_disk.items())
        if name not in listed
    ]
    problems += [
        f"pyproject.toml lists {name}, but there is no {name} directory with an __init__.py"
        for name in sorted(listed - on_disk.keys())
    ]
    _fail_if(problems, "pyproject.toml and the package directories disagree")


def test_no_directory_of_modules_lacks_init() -> None:
    # A folder of .py files without __init__.py is a namespace package: it
    # imports from the checkout, but setuptools would not install it.
    problems = []
    for root in SOURCE_ROOTS:
        for directory in sorted({p.parent for p in (REPO / root).rglob("*.py")}):
            if "__pycache__" in directory.parts:
                continue
            if not (directory / "__init__.py").is_file():
                problems.append(f"{directory.relative_to(REPO).as_posix()}/ has no __init__.py")
    _fail_if(problems, "folders of modules that setuptools would not install")


def test_rules_catch_known_violations() -> None:
    """The rules themselves, on imports they must reject and accept."""

    def broken(path: str, module: str) -> list[str]:
        return [r.name for r in RULES if r.applies_to(path) and r.forbidden(module)]

    assert broken("dfs/client/io.py", "pyfuse3")
    assert broken("dfs/master/x.py", "vmstore.dfs.chunkserver.chunk_store")
    assert broken("dfs/chunkserver/x.py", "vmstore.dfs.master")
    assert broken("dfs/metadata/x.py", "trio.lowlevel")
    assert broken("dfs/metadata/x.py", "vmstore.dfs.protocol.rpc")
    assert broken("dfs/protocol/codec.py", "vmstore.dfs.metadata")
    assert broken("fuse/operations.py", "vmstore.dfs.metadata.store")
    assert broken("fuse/operations.py", "vmstore.dfs.protocol.codec")
    assert broken("cli/main.py", "libvirt")
    assert broken("cli/main.py", "fuse")
    assert broken("dfs/master/x.py", "vmstore.dfs.testing")
    assert broken("dfs/client/x.py", "vmstore.dfs.testing.cluster")
    assert broken("dfs/protocol/x.py", "vmstore.dfs.testing")
    assert broken("dfs/testing/cluster.py", "pyfuse3")
    assert broken("dfs/testing/cluster.py", "vmstore.fuse.operations")
    assert broken("dfs/testing/cluster.py", "vmstore.cli.main")
    assert broken("dfs/master/x.py", "vmstore.dfs.client.client")
    assert broken("dfs/chunkserver/x.py", "vmstore.dfs.migration")
    for layer in ("master", "chunkserver", "metadata"):
        assert broken("dfs/client/chunk_io.py", f"vmstore.dfs.{layer}.x")
        assert broken("dfs/migration/fleet.py", f"vmstore.dfs.{layer}")
    assert broken("dfs/client/client.py", "vmstore.dfs.migration.coordinator")
    assert not broken("dfs/testing/cluster.py", "vmstore.dfs.testing.simnet")
    for layer in ("master.main", "chunkserver.main", "metadata.store", "client.client"):
        assert not broken("dfs/testing/cluster.py", f"vmstore.dfs.{layer}")
    assert not broken("dfs/client/chunk_io.py", "vmstore.dfs.protocol.rpc")
    assert not broken("dfs/migration/fleet.py", "vmstore.dfs.client.client")
    assert not broken("dfs/metadata/x.py", "vmstore.dfs.protocol.messages")
    assert not broken("dfs/protocol/codec.py", "vmstore.dfs.types")
    assert not broken("fuse/operations.py", "vmstore.dfs.client.master_client")
    assert not broken("fuse/operations.py", "pyfuse3")
    assert not broken("dfs/migration/coordinator.py", "libvirt")
    assert not broken("cli/main.py", "vmstore.dfs.master.main")


def test_parse_imports_sees_every_form() -> None:
    source = (
        "import os, trio.lowlevel\n"
        "from vmstore.dfs import metadata, __version__\n"
        "from . import sibling\n"
        "def f():\n"
        "    import importlib\n"
        "    return importlib.import_module('libvirt')\n"
    )
    got = [(i.lineno, i.module, i.level) for i in parse_imports(source, "dfs/x.py")]
    assert got == [
        (1, "os", 0),
        (1, "trio.lowlevel", 0),
        # `from vmstore.dfs import metadata` imports the subpackage; a plain
        # attribute counts as importing the package it comes from.
        (2, "vmstore.dfs.metadata", 0),
        (2, "vmstore.dfs", 0),
        (3, "", 1),
        (5, "importlib", 0),
        (6, "libvirt", 0),
    ]
