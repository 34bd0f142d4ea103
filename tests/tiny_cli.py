"""``cli.py`` with the tests' tiny backbone registered, for runs in child processes.

Multi-process runs start each process with this same command line, so the backbone has to be
registered by the script itself:

    python tests/tiny_cli.py fit --config configs/style_transfer.yaml --model.backbone tiny ...
"""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

import conftest  # noqa: E402,F401 - registers the "tiny" backbone
from cli import run  # noqa: E402

if __name__ == "__main__":
    run()
