#!/usr/bin/env bash
# Stop 17, call W1: the CUDA tests of the renderer's replay, then 64 clients with graphs and each JPEG library.
mkdir -p ../shared && ln -sfn $PWD/.devshare/fixtures ../shared/fixtures
timeout 150 python3 -m pytest -p no:cacheprovider -q -x tests/test_render_replay.py tests/test_batched_render.py -k "cuda or graph" 2>&1 | tail -15
python3 bench/gpu_pipeline.py --out $OUT/w1.json --counts 64 --rows gpu-engine-x4e4 --seconds 6 \
  --variants ";--render-graphs --gpu-jpeg nvimgcodec;--gpu-jpeg nvimgcodec;--render-graphs" 2> $OUT/w1.log | cut -c1-700
