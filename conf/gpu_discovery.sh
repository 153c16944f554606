#!/usr/bin/env bash
# Spark's GPU discovery script (spark.driver.resource.gpu.discoveryScript in local mode,
# spark.executor.resource.gpu.discoveryScript on a cluster; jobs/spark.py sets them from training.gpu).
#
# Prints the GPUs of this machine as Spark's ResourceInformation JSON, on one line:
#   {"name": "gpu", "addresses": ["0", "1"]}
# the indices `nvidia-smi --query-gpu=index --format=csv,noheader` lists, as Spark's own example script
# (examples/src/main/scripts/getGpusResources.sh) does. No nvidia-smi, or one that fails: no addresses
# (exit 0), so a machine without GPUs reads as "none" rather than as a broken script.
#
# With CUDA_VISIBLE_DEVICES set, the addresses are positions in it (0 .. n-1): TorchDistributor maps an
# address back through CUDA_VISIBLE_DEVICES (gpu_list[int(address)]), and torch counts the same n GPUs.
set -u

indices=""
if command -v nvidia-smi >/dev/null 2>&1; then
    indices=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null) || indices=""
fi
n=$(printf '%s\n' "$indices" | grep -c '^ *[0-9][0-9]* *$')

if [ "${CUDA_VISIBLE_DEVICES+set}" = set ]; then
    if [ -z "$CUDA_VISIBLE_DEVICES" ]; then
        visible=0
    else
        visible=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
    fi
    [ "$visible" -lt "$n" ] && n=$visible
    addresses=$(seq 0 $((n - 1)) 2>/dev/null)
else
    addresses=$(printf '%s\n' "$indices" | tr -d ' ' | grep '^[0-9][0-9]*$')
fi

json=""
for a in $addresses; do
    json="${json:+$json, }\"$a\""
done
echo "{\"name\": \"gpu\", \"addresses\": [$json]}"
