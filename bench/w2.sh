#!/usr/bin/env bash
# Stop 17, call W2: who holds the engines' GILs at 64 clients, op by op and with graphs (py-spy).
mkdir -p ../shared && ln -sfn $PWD/.devshare/fixtures ../shared/fixtures
python3 bench/gpu_pipeline.py --out $OUT/w2.json --counts 64 --rows gpu-engine-x4e4 --seconds 6 \
  --variants ";--render-graphs" --profile-dir /tmp/gil 2> $OUT/w2.log | cut -c1-600
ls -la /tmp/gil/*; tar -czf $OUT/gil.tgz -C /tmp gil
