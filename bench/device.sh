#!/usr/bin/env bash
# Run a bench command on the device machine (the device tool's `run`), from the repository root:
#   bash bench/device.sh python3 bench/gpu_pipeline.py --video .devshare/pose_squats.mp4 --out $OUT/x.json
# The machine has PyTorch but not this project's other packages and no network, so they travel
# as wheels in .whl/ (carry: [".whl", ".devshare"]), made here beforehand with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     Flask==3.1.3 flask-sock==0.7.0 simple-websocket==1.1.0 wsproto gunicorn==27.0.1 simplejpeg==1.9.0 \
#     itsdangerous blinker 'werkzeug>=3.1' nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43 py-spy
#     pytest==9.0.3 pluggy iniconfig packaging pygments   (for the CUDA tests: python3 -m pytest -p no:cacheprovider ...)
# (one package a call), and the fixture video copied to .devshare/ (for the tests, ../shared/fixtures
# linked there on the machine: mkdir -p ../shared && ln -sfn $PWD/.devshare/fixtures ../shared/fixtures). Both folders are in
# .git/info/exclude. MPS is started for the command (the engines' kernels then run side by side:
# docs/performance.md, stop 11) and stopped after it.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD/src:/tmp/site" PATH="/tmp/site/bin:$PATH" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
lscpu | grep -m1 "Model name"
nproc
nvidia-cuda-mps-control -d && echo "MPS started"
"$@"
rc=$?
echo quit | nvidia-cuda-mps-control
exit $rc
