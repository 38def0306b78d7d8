#!/usr/bin/env bash
# The NumPy path of two checkouts, side by side: one epoch of 2,560 Fashion-MNIST samples through the command
# (SmallConv, batch 128, Adam, seed 0, one BLAS thread), each run a process of its own, the two trees
# alternated run by run over 3 rounds; prints each run's training seconds, train loss and test accuracy.
#   git worktree add /tmp/before <commit>; bash benchmarks/numpy_path_before_after.sh /tmp/before .
set -u
before=$(cd "${1:?the checkout to compare with}" && pwd); now=$(cd "${2:-.}" && pwd)
out=$(mktemp -d)
cat /proc/loadavg
for round in 1 2 3; do
  for trainer in bp lls dgl; do
    for tree in "$before" "$now"; do
      json="$out/$round-$trainer-$(basename "$tree").json"
      (cd "$tree" && PYTHONPATH="$tree" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m tinydgl train \
        --trainer "$trainer" --model smallconv --dataset fashion-mnist --epochs 1 --limit-train 2560 \
        --limit-test 256 --seed 0 --metrics-json "$json" >/dev/null 2>&1)
      python -c "import json, sys; h = json.load(open(sys.argv[1]))['history'][-1]; print(sys.argv[2], sys.argv[3], \
round(h['seconds'], 3), h['train_loss'], h['test_accuracy'])" "$json" "$tree" "$trainer"
    done
  done
done
cat /proc/loadavg
