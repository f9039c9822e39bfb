"""The project as a package (issue #16): `pip install -e .` gives a working `acne` command in a fresh
environment, the scripts import the installed package (no sys.path edits), acne/ has no import cycle
and no module over MAX_LINES lines."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import EXAMPLES_DIR, PROJECT_DIR

PACKAGE = PROJECT_DIR / "acne"
MAX_LINES = 450


# --------------------------------------------------------------------------- the installed command

@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtual environment that sees this machine's packages (torch and friends: nothing is
    downloaded) but not its installed copy of acne; this checkout installed into it, editable."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    # No pip of its own: ensurepip would also bring an old setuptools that shadows this machine's. This
    # machine's pip installs into it (--python) and its setuptools builds (--no-build-isolation).
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(folder)
    python = folder / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-build-isolation", "--no-index", "--disable-pip-version-check", "-q",
                           "-e", str(PROJECT_DIR)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the test suite's model settings and path (the command must find
    its own package and the shipped weights), offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACNE_") and k != "PYTHONPATH"}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def test_pip_install_e_gives_the_acne_command(fresh_venv, tmp_path):
    elsewhere = tmp_path / "elsewhere"   # not the repository: nothing is found through the working folder
    elsewhere.mkdir()
    python, command = fresh_venv / "bin" / "python", fresh_venv / "bin" / "acne"
    where = subprocess.run([str(python), "-c", "import acne; print(acne.__file__)"], cwd=elsewhere,
                           env=clean_env(), capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()) == PACKAGE / "__init__.py", where.stdout + where.stderr  # this checkout
    photo = EXAMPLES_DIR / "acne04_valid_grade1_1.jpg"
    done = subprocess.run([str(command), "analyze", str(photo), "--json"], cwd=elsewhere, env=clean_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)
    assert record["file"] == str(photo) and record["ok"] is True and record["severity"] in (
        "Clear", "Mild", "Moderate", "Severe")
    assert record["segmenter"] == str(PROJECT_DIR / "weights" / "segmenter")   # the shipped weights
    same = subprocess.run([str(python), "-m", "acne", "analyze", str(photo), "--json"], cwd=elsewhere,
                          env=clean_env(), capture_output=True, text=True, timeout=600)
    assert same.returncode == 0, same.stderr[-3000:]
    strip = lambda r: {k: v for k, v in r.items() if k != "timings_ms"}  # noqa: E731
    assert strip(json.loads(same.stdout)) == strip(record)   # `acne` is `python -m acne`


# --------------------------------------------------------------------------- the code's shape

def test_no_script_edits_sys_path():
    offenders = []
    for script in sorted((PROJECT_DIR / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(), str(script))):
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                offenders.append(f"{script.name}:{node.lineno}")
    assert not offenders, f"scripts use sys.path (import the installed package instead): {offenders}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The acne modules `path` imports when it is imported: its top-level import statements (also inside
    top-level try/if blocks, but not under `if TYPE_CHECKING`), with the packages each one loads on the way."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
                continue
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                    visit(block)
                continue
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):   # importing a.b.c runs a and a.b first
                    prefix = ".".join(parts[:i])
                    # (the module's own packages are imported before it: no edge back to them)
                    if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                        found.add(prefix)

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


def test_acne_has_no_import_cycle():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = {module_name(f): module_level_imports(f, modules) for f in files}
    assert graph["acne.cli"] >= {"acne.records", "acne.batch.command"}, graph["acne.cli"]   # the walk works
    cycles: list[list[str]] = []
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles in acne/: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_of_acne_is_over_the_limit():
    long = {str(f.relative_to(PROJECT_DIR)): n for f in sorted(PACKAGE.rglob("*.py"))
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"
