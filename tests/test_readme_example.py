"""The docs' worked examples (a new technique, pictures while you train) run as written.

The examples that use this checkout run in processes forked after tiny_cli.py's imports
(tests/cli_processes.py); the built-in technique runs a copy of the package, in a fresh one."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cli_processes

ROOT = Path(__file__).resolve().parents[1]


def docs_block(page: str, name: str, kind: str = "example") -> str:
    """The code block that follows ``<!-- KIND: NAME -->`` on the page ``docs/PAGE`` (``example``
    blocks are run as scripts, ``file`` blocks are written where their name says)."""
    text = (ROOT / "docs" / page).read_text()
    match = re.search(rf"<!-- {kind}: {re.escape(name)} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"docs/{page} has no {kind} {name}"
    return match.group(1)


def docs_example(page: str, name: str) -> str:
    return docs_block(page, name)


def test_readme_technique_runs_and_its_loss_falls(tmp_path: Path) -> None:
    for name in ("dream.py", "run.py"):
        (tmp_path / name).write_text(docs_example("your_own_technique.md", name))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    done = cli_processes.run_script(tmp_path / "run.py", tmp_path, [ROOT, tmp_path], env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "dream" / "lightning_logs" / "version_0"
    assert (run / "chelsea.png").is_file() and (run / "chelsea_sheet.png").is_file()
    with open(run / "losses.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    # The layer fires harder: its (negated) loss falls a lot.
    assert float(rows[-1]["dream_loss"]) < 2 * float(rows[0]["dream_loss"]) < 0


def test_readme_training_pictures_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "train_digits.py").write_text(
        docs_example("training_pictures.md", "train_digits.py"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = cli_processes.run_script(tmp_path / "train_digits.py", tmp_path, [ROOT], env)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = (tmp_path / "runs" / "digits" / "lightning_logs").glob("version_*")
    written = sorted(path.name for path in (run / "training_pictures").iterdir())
    assert written == ["classes_epoch001.png", "classes_epoch003.png",
                       "saliency_epoch001.png", "saliency_epoch003.png"]


def test_a_built_in_technique_needs_its_package_config_and_page_only(tmp_path: Path) -> None:
    # A copy of the package as it ships, plus the new technique's three places and nothing else.
    package = tmp_path / "package"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("lightning_modules", "datamodules", "callbacks", "configs"):
        shutil.copytree(ROOT / name, package / name, ignore=ignore)
    shutil.copy(ROOT / "cli.py", package / "cli.py")
    page = "your_own_technique.md"
    technique = package / "lightning_modules" / "layer_dream"
    technique.mkdir()
    for path in ("lightning_modules/layer_dream/__init__.py", "configs/layer_dream.yaml"):
        (package / path).write_text(docs_block(page, path, "file"))
    (technique / "module.py").write_text(docs_example(page, "dream.py"))
    (package / "docs").mkdir()
    (package / "docs" / "layer_dream.md").write_text("# LayerDream\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(package)}
    # The shipped config by name, and the class by its short name (cli.py found the package).
    done = subprocess.run(
        [sys.executable, str(package / "cli.py"), "fit", "--config", "layer_dream", "--model",
         "LayerDream", "--model.layer", "3", "--trainer.max_steps", "3", "--data.image_size",
         "48", "--trainer.enable_progress_bar", "false"],
        cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = (elsewhere / "runs" / "layer_dream").glob("version_*")
    assert (run / "chelsea.png").is_file() and (run / "losses.csv").is_file()
    assert "class_path: lightning_modules.layer_dream.LayerDream" in \
        (run / "config.yaml").read_text()
