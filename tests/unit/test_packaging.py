"""The product wheel holds the product only: no agent.lab, no lab-only dependency.

Product code is every module under agent/ outside agent/lab; the check reads the
imports in its source (absolute, relative and importlib by name), so an import
inside a function counts too."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[2]
LAB_ONLY_DEPENDENCIES = {"vici"}


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Dotted names `source` (the module `module`) imports, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
              in ("import_module", "__import__")):
            yield node.args[0].value


def lab_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    return sorted({
        name for name in imported_modules(source, module, is_package)
        if name == "agent.lab" or name.startswith("agent.lab.")
        or name.split(".")[0] in LAB_ONLY_DEPENDENCIES
    })


def product_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / "agent").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if rel.parts[:2] == ("agent", "lab"):
            continue
        yield ".".join(rel.parts), path


def test_the_check_sees_every_kind_of_import() -> None:
    cases = {
        "import agent.lab.vppsim.server": "agent.peers.manager",
        "from agent.lab import demo": "agent.peers.manager",
        "from agent import lab": "agent.peers.manager",
        "from ..lab.vppsim import state": "agent.peers.manager",
        "from . import lab": "agent.main",
        "def f():\n    import vici\n": "agent.vpp.client",
        "importlib.import_module('agent.lab.demo')": "agent.main",
    }
    for source, module in cases.items():
        assert lab_imports(source, module), source
    assert lab_imports("from .lab import x", "agent", is_package=True) == [
        "agent.lab", "agent.lab.x"]
    assert lab_imports("from agent.labels import x\nimport agent.link", "agent.main") == []


def test_product_code_never_imports_the_lab() -> None:
    modules = list(product_modules())
    assert len(modules) > 50  # the scan found the product
    found = {}
    for module, path in modules:
        bad = lab_imports(path.read_text(), module, path.name == "__init__.py")
        if bad:
            found[module] = bad
    assert found == {}


def test_the_wheel_configuration_leaves_the_lab_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool = project["tool"]["setuptools"]
    assert tool["include-package-data"] is False  # else agent/lab ships as "data"
    find = tool["packages"]["find"]
    packaged = set(setuptools.find_packages(str(ROOT), include=find["include"],
                                            exclude=find["exclude"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "agent").rglob("__init__.py")}
    assert packaged == {p for p in on_disk if not p.startswith("agent.lab")}
    assert "agent" in packaged and "agent.lab" in on_disk
    scripts = project["project"]["scripts"]
    assert not [s for s in scripts.values() if s.startswith("agent.lab")]
    deps = " ".join(project["project"]["dependencies"])
    assert not [d for d in LAB_ONLY_DEPENDENCIES if d in deps]
    lab = " ".join(project["project"]["optional-dependencies"]["lab"])
    assert all(d in lab for d in LAB_ONLY_DEPENDENCIES)
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "-e '.[test,lab]'" in bootstrap  # the tests and the demo need the lab


def test_the_wheel_installs_the_startup_template_where_the_agent_looks() -> None:
    import sys

    from agent.daemon.startup_conf import TEMPLATE_CANDIDATES, TEMPLATE_NAME

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data_files = project["tool"]["setuptools"]["data-files"]
    installed = [Path(sys.prefix) / target / Path(src).name
                 for target, sources in data_files.items() for src in sources
                 if Path(src).name == TEMPLATE_NAME]
    assert installed and installed[0] in TEMPLATE_CANDIDATES
    assert (ROOT / "vpp_templates" / TEMPLATE_NAME).is_file()
