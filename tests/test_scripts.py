"""scripts/: the README's results table comes from runs, spliced between its markers; the paper-tables script's
steps compose; the SLURM example is valid bash."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme_results.py"


def _module():
    spec = importlib.util.spec_from_file_location("readme_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_splice_replaces_only_the_block():
    m = _module()
    readme = f"intro\n{m.BEGIN}\nold table\n{m.END}\noutro\n"
    out = m.splice(readme, "| a |\n|---|\n", "note")
    assert out == f"intro\n{m.BEGIN}\nnote\n\n| a |\n|---|\n{m.END}\noutro\n"
    assert m.splice(out, "| b |", "note2").count("| a |") == 0


def test_the_repository_readme_has_one_block():
    m = _module()
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    assert m.splice(readme, "| t |", "n").count(m.BEGIN) == 1


@pytest.mark.parametrize("bad", ["no markers", "<!-- demo-results:end --> <!-- demo-results:begin -->"])
def test_a_readme_without_one_block_is_refused(bad):
    with pytest.raises(ValueError, match="exactly one"):
        _module().splice(bad, "| t |", "n")


def _script(name: str):
    path = SCRIPT.parent / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", ["50m", "5b"])
def test_the_paper_tables_script_composes_every_step(size):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from yambda_dl.train import CONFIG_DIR, register_sweeper

    m = _script("reproduce_paper_tables.py")
    steps = m.commands(size, ["listen_plus", "like"], trials=5, seeds=3, overrides=["trainer=gpu"])
    tuned = [c[3] for c in steps if c[1:3] == ["-m", "yambda_dl.tune"]]
    assert tuned == [*(["decaypop", "itemknn"] if size == "50m" else ["decaypop"]), "ials", "bpr"] * 2
    assert all((Path(CONFIG_DIR) / "hparams_search" / f"{model}_optuna.yaml").is_file() for model in tuned)
    register_sweeper()
    for command in (c for c in steps if c[1:3] == ["-m", "yambda_dl.train"]):
        assert "seed=42,43,44" in command  # swept by the command's multirun: composed here without it
        overrides = [o for o in command[3:] if not o.startswith(("hydra.sweep.dir=", "seed="))]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        assert cfg.hydra.sweeper.params.model == "random,mostpop,sansa,sasrec" and cfg.trainer.accelerator == "gpu"
        assert cfg.data.name == f"yambda_{size}" and cfg.continue_on_refusal
    reports = [c for c in steps if c[1:3] == ["-m", "yambda_dl.report"]]
    expected = [f"--output=outputs/paper_tables/yambda_{size}-{setup}.md" for setup in ("listen_plus", "like")]
    assert [c[-1] for c in reports] == expected


def test_the_slurm_example_is_valid_bash():
    import subprocess

    script = SCRIPT.parent / "slurm_example.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "hydra/launcher=slurm" in script.read_text()
