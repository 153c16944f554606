"""Run :func:`training.trainer.train` under torchrun, without Spark.

    python -m training.torchrun_main save-spec ...        (from Python: save_spec(spec, path))
    torchrun --nproc_per_node=N -m training.torchrun_main SPEC.pkl RESULT.pt

``SPEC.pkl`` is a pickled :class:`training.trainer.TrainSpec` whose source every
rank can read (an :class:`~training.loader.ArraySource`, or a petastorm
converter whose cache every node sees). torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; ``train`` reads
them exactly as it does under TorchDistributor. Rank 0 writes the result
(best weights, history) to ``RESULT.pt`` atomically.
"""
from __future__ import annotations

import os
import pickle
import sys

import torch

from training.trainer import TrainSpec, train


def save_spec(spec: TrainSpec, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(spec, f)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: torchrun --nproc_per_node=N -m training.torchrun_main SPEC.pkl RESULT.pt", file=sys.stderr)
        return 2
    spec_path, out = argv
    with open(spec_path, "rb") as f:
        spec = pickle.load(f)
    result = train(spec)
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = out + ".tmp"
        torch.save(result, tmp)
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
