#!/usr/bin/env bash
# The package as a user installs it: a wheel (not editable) in a new venv, used from another
# directory. The venv borrows the project venv's dependencies (a .pth file) so that CI does not
# install torch twice; the project itself comes only from the wheel.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheel" "$repo" >/dev/null
python3 -m venv "$work/venv"
deps="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
own="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$deps" > "$own/project_dependencies.pth"
"$work/venv/bin/python" -m pip install -q --no-deps "$work"/wheel/*.whl
mkdir "$work/elsewhere" && cd "$work/elsewhere"
"$work/venv/bin/python" - <<'PY'
import lightning_modules, configs
assert "site-packages" in lightning_modules.__file__, lightning_modules.__file__
from lightning_modules import stylize
picture = stylize("sample:chelsea", "sample:immunohistochemistry", steps=2, image_size=64)
assert picture.size[1] == 64, picture.size
print("installed wheel: stylize() returned", picture.size, "from", lightning_modules.__file__)
PY
"$work/venv/bin/image-opt" fit --config style_transfer --trainer.max_steps 2 \
    --data.image_size 64 --trainer.enable_progress_bar false 2>/dev/null
test -f runs/style_transfer/version_0/chelsea__immunohistochemistry.png
echo "installed wheel: image-opt fit --config style_transfer wrote runs/style_transfer/version_0/chelsea__immunohistochemistry.png"
