"""An installed wheel, outside the repository, has its recipes and package data and trains from them."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_outside_the_repository_runs_its_recipes(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("selfsup-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "selfsup/recipes/relicv2_fmnist.yaml" in names and "selfsup/recipes/eval/relicv2_semi_1pct.yaml" in names
    assert "selfsup/data/jigsaw_permutations_100.txt" in names
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    # the wheel's copy comes first on the path; the working directory is outside the repository
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    env.pop("SELFSUP_RECIPES", None)
    where = subprocess.run([sys.executable, "-c", "import selfsup, sys; print(selfsup.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    cli = [sys.executable, "-m", "selfsup.cli.main"]
    listed = subprocess.run([*cli, "recipes"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "relicv2_shapes" in listed.stdout and "rotation_imagenet" in listed.stdout
    assert str(site) in listed.stdout and "relicv2_semi_1pct" in listed.stdout
    run = subprocess.run([*cli, "pretrain", "relicv2_shapes", "--quiet", "train.steps=2", "train.batch_size=16",
                          "data.train_size=64", "data.test_size=32", "monitor.knn_every_steps=0",
                          f"out={tmp_path / 'run'}"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "last.ckpt").is_file()
