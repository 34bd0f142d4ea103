"""The docs' worked examples (a new technique, pictures while you train) run as written."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def docs_example(page: str, name: str) -> str:
    """The code block that follows ``<!-- example: NAME -->`` on the page ``docs/PAGE``."""
    text = (ROOT / "docs" / page).read_text()
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"docs/{page} has no example {name}"
    return match.group(1)


def test_readme_technique_runs_and_its_loss_falls(tmp_path: Path) -> None:
    for name in ("dream.py", "run.py"):
        (tmp_path / name).write_text(docs_example("your_own_technique.md", name))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    subprocess.run([sys.executable, "run.py"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    run = tmp_path / "runs" / "dream" / "lightning_logs" / "version_0"
    assert (run / "chelsea.png").is_file() and (run / "chelsea_sheet.png").is_file()
    with open(run / "losses.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    # The layer fires harder: its (negated) loss falls a lot.
    assert float(rows[-1]["dream_loss"]) < 2 * float(rows[0]["dream_loss"]) < 0


def test_readme_training_pictures_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "train_digits.py").write_text(
        docs_example("training_pictures.md", "train_digits.py"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "train_digits.py"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    [run] = (tmp_path / "runs" / "digits" / "lightning_logs").glob("version_*")
    written = sorted(path.name for path in (run / "training_pictures").iterdir())
    assert written == ["classes_epoch001.png", "classes_epoch003.png",
                       "saliency_epoch001.png", "saliency_epoch003.png"]
