"""The package as a user installs it: a wheel that carries its configs and whose commands run from any directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_and_config_ships():
    """pyproject lists its packages by hand (configs/ is mapped in): a subpackage missing there would be left out."""
    setuptools = pyproject()["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "yambda_dl").rglob("__init__.py")}
    missing = sorted(found - set(setuptools["packages"]))
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}: they would not be in the wheel"
    assert setuptools["package-dir"]["yambda_dl.configs"] == "configs"
    # package-data ships **/*.yaml: any other kind of file under configs/ would be left out of the wheel
    files = (p for p in (ROOT / "configs").rglob("*") if p.is_file())
    others = sorted(str(p.relative_to(ROOT)) for p in files if p.suffix != ".yaml")
    assert not others, f"{others} under configs/ would not ship: only *.yaml is package data"


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command; on failure, the assertion shows its output's tail."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"
    return done


@pytest.mark.slow  # builds a wheel, installs it into a new venv and runs both commands (~15 s)
def test_the_wheel_runs_from_any_directory(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    # build from a copy, so that setuptools' build/ and egg-info never land in the checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("yambda_dl", "configs", "hydra_plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "YAMBDA_DATA_DIR", "PIP_REQUIRE_VIRTUALENV")}
    env |= {"WANDB_MODE": "offline", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(tmp_path / "dist"), "."]
    run([*pip, *build], source, env)
    (wheel,) = (tmp_path / "dist").glob("yambda_dl-*.whl")

    # a fresh venv; the wheel is installed before the dependencies are made visible, so pip sees no other yambda_dl
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], tmp_path, env)
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
    # torch & co. from this environment: a plain path line, so its .pth files (our editable install) are not run
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site.stdout.strip()) / "_test_deps.pth").write_text("\n".join(deps) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run([str(python), "-c", "import yambda_dl.train as t; print(t.CONFIG_DIR)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(venv), f"yambda_dl came from {where}, not from the installed wheel"
    assert (Path(where) / "model" / "mostpop.yaml").is_file()

    run([str(venv / "bin" / "yambda-data"), "synth", "--preset", "tiny", "--root", "data/synthetic_tiny"], work, env)
    assert list((work / "data" / "synthetic_tiny").rglob("*.parquet"))
    run([str(venv / "bin" / "yambda-train"), "data=synthetic_tiny", "model=mostpop"], work, env)
    (metrics,) = (work / "outputs").rglob("metrics.json")
    assert json.loads(metrics.read_text())["metrics"]["ndcg@10"] > 0

    # every other declared command is installed and starts
    for script in sorted(set(pyproject()["project"]["scripts"]) - {"yambda-data", "yambda-train"}):
        run([str(venv / "bin" / script), "--help"], work, env)
