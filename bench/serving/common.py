"""What every serving benchmark shares: where results go and the product's defaults they use."""
from bench.measure import ROOT

OUT = ROOT / "bench" / "out"
STORE = OUT / "serving.json"
THREADS = 2                       # torch threads for top_k and every matmul baseline
P99_TARGET_MS = 5.0
DRAIN_S = 5.0                     # seconds an open-loop run waits for answers after its last send
WARMUP_RATE = 200                 # requests/s the 2 s warm-up before each measured run ramps up from
LIST_K = 20                       # items per lookup
NAMESPACE, N_SHARDS = "reco", 256  # the product's defaults (conf/base.yaml)
CHUNK = 20_000                    # records per chunk, as jobs/publish.py hands them over
BATCH_KEYS = 10_000               # redis.batch_keys default
BENCH_PIPELINE, BENCH_CLIENTS = 64, 50

