#!/usr/bin/env bash
# The one CUDA check, for a GPU machine reached through the `device` tool: the test suite
# with the GPU visible (commands default to --device auto, so the pipeline runs on CUDA), then the
# benchmark with --device cuda, then one full-size paper row on synthetic data of the real shape
# (bench/synthetic_row.py: 50,000 CIFAR-100-shaped images, ResNet-18, timing each stage). About 11
# minutes; what to keep lands in $OUT. ROW=0 skips the row.
#
# The machine's image has PyTorch but not diffusers or jsonargparse and cannot download. Once, here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 \
#       jsonargparse==4.53.0
# then: device run, carry [".whl"], command "bash bench/gpu_check.sh", timeout_s 540.
# DEVICE=cpu runs the same steps on a machine without a GPU (to check the script itself).
set -uo pipefail
out=${OUT:-/tmp/gpu_check}
device=${DEVICE:-cuda}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/nndiff-site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/nndiff-site:$PWD/src PYTHONUNBUFFERED=1 NNDIFF_CACHE=/tmp/nndiff-cache
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
else
    export CUDA_VISIBLE_DEVICES=""
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())" | tee -a "$out/device.txt"

# The distributed tests hide the GPUs themselves (they test the CPU path); skipping them saves 2 minutes.
timeout 240 python3 -m pytest -q -x -p no:cacheprovider --ignore tests/test_distributed.py 2>&1 | tee "$out/tests.log" | tail -5
tests=$?
timeout 240 python3 bench/bench.py --device "$device" --out /tmp/nndiff-bench 2>&1 | tee "$out/bench.log" | tail -25
bench=$?
cp /tmp/nndiff-bench/results.json /tmp/nndiff-bench/results.md "$out/" 2>/dev/null
row=0
if [ "${ROW:-1}" != 0 ]; then
    timeout 330 python3 bench/synthetic_row.py --device "$device" --out /tmp/nndiff-row 2>&1 | tee "$out/row.log" | tail -20
    row=$?
    cp /tmp/nndiff-row/row.json "$out/" 2>/dev/null
fi
echo "tests exit $tests, bench exit $bench, row exit $row"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$row" -eq 0 ]
