#!/usr/bin/env bash
# DeepLabCut 3 (PyTorch engine) in a venv of its own: benchmarks/peers/deeplabcut/.venv (gitignored).
# Never a dependency of contrastive_landmarks: run.py runs in this venv and calls the library's own venv
# ($CL_PYTHON, default <repo>/.venv/bin/python) only to print our split's frames.
#
# Torch + torchvision, first of:
#   1. a CPU pair of wheels for this Python in $WHEEL_DIR (default /opt/wheels): torch-*+cpu and torchvision-*+cpu;
#   2. PyTorch's CPU index (https://download.pytorch.org/whl/cpu), when it answers (under 1 GB installed);
#   3. the package index's default build (the CUDA one, about 4.5 GB installed with its nvidia-* packages;
#      it runs on a CPU too). A CPU torch alone is not enough: the package index's torchvision is built
#      against CUDA torch and does not import beside a CPU torch ("operator torchvision::nms does not exist").
# Then deeplabcut==$DLC_VERSION (default 3.0.2) with torch and torchvision pinned, so pip replaces neither.
#
# Usage: bash benchmarks/peers/deeplabcut/install.sh     (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
dlc_version="${DLC_VERSION:-3.0.2}"
wheel_dir="${WHEEL_DIR:-/opt/wheels}"
cpu_index="https://download.pytorch.org/whl/cpu"

"$python" -m venv "$here/.venv"
py="$here/.venv/bin/python"
pip=("$py" -m pip)
"${pip[@]}" install --upgrade pip wheel >/dev/null

tag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
torch_wheel="$(ls "$wheel_dir"/torch-*+cpu-"$tag"-"$tag"-*linux*x86_64.whl 2>/dev/null | sort -V | tail -n 1 || true)"
vision_wheel="$(ls "$wheel_dir"/torchvision-*+cpu-"$tag"-"$tag"-*linux*x86_64.whl 2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -n "$torch_wheel" && -n "$vision_wheel" ]]; then
    echo "torch: CPU wheels $torch_wheel $vision_wheel"
    "${pip[@]}" install "$torch_wheel" "$vision_wheel"
elif "$py" -c "import urllib.request; urllib.request.urlopen('$cpu_index/torch/', timeout=15)" 2>/dev/null; then
    echo "torch: PyTorch's CPU index"
    "${pip[@]}" install torch torchvision --index-url "$cpu_index"
else
    echo "torch: no CPU torchvision here and PyTorch's CPU index does not answer: the package index's default (CUDA) build"
    "${pip[@]}" install torch torchvision
fi
versions="$("$py" -c 'import torch, torchvision; print(torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])')"
read -r torch_version vision_version <<<"$versions"

"${pip[@]}" install "deeplabcut==$dlc_version" "torch==$torch_version" "torchvision==$vision_version"
"$py" - <<'PY'
import deeplabcut, torch, torchvision
print(f"installed: deeplabcut {deeplabcut.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
