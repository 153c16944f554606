"""The training loop (training.trainer) end to end on tiny inline data: a planted preference it must
learn, determinism, early stopping and refits, a two-process TorchDistributor run on CPU and the Spark ->
petastorm -> trainer path of training.fit.fit_two_tower."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from training import featurize, trainer
from training.data import PAIR_COLUMNS, Catalog, examples_frame, log_sampling_prob, to_interactions
from training.experiment import _eval_set
from training.fit import fit_two_tower, launch
from training.featurize import build_item_meta
from training.interactions import Interactions
from training.loader import ArraySource
from training.metrics import evaluate, topk
from training.model import ModelConfig, TwoTower
from training.trainer import EvalSet, TrainParams, TrainSpec, load_model, score_fn, train

N_GROUPS, GROUP_SIZE = 4, 10


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    # train() sets torch's thread count for the whole process (cpu_threads); restore it for other tests
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _planted(n_users: int, per_user: int = 6, seed: int = 7):
    """Users in N_GROUPS groups (user % N_GROUPS); each buys ``per_user`` distinct items of its group's
    GROUP_SIZE items at increasing times. The last item of each user is held out as validation."""
    rng = np.random.default_rng(seed)
    n_items = N_GROUPS * GROUP_SIZE
    fit_rows, valid_rows = [], []
    for u in range(n_users):
        g = u % N_GROUPS
        items = rng.choice(np.arange(g * GROUP_SIZE, (g + 1) * GROUP_SIZE), per_user, replace=False)
        for k, it in enumerate(items):
            (fit_rows if k < per_user - 1 else valid_rows).append((u, int(it), 1000.0 * (k + 1) + u))
    mk = lambda rows: Interactions.from_arrays([r[0] for r in rows], [r[1] for r in rows], n_users, n_items,  # noqa: E731
                                               time=[r[2] for r in rows])
    return mk(fit_rows), mk(valid_rows)


def _model_cfg(n_users: int, n_items: int, **over) -> ModelConfig:
    base = dict(n_users=n_users, n_items=n_items, dim=16, hidden=32, history_len=8, n_category_buckets=8,
                n_price_buckets=4, n_popularity_buckets=8, n_title_buckets=16, max_title_tokens=2)
    base.update(over)
    return ModelConfig(**base)


def _spec(fit: Interactions, valid_truth, params: TrainParams, exclude_seen=True, checkpoint_dir=None,
          **model_over) -> TrainSpec:
    mc = _model_cfg(fit.n_users, fit.n_items, **model_over)
    counts = np.bincount(fit.item, minlength=fit.n_items).astype(np.float64)
    # no catalog metadata: the item ids must carry the preference
    meta = build_item_meta(fit.n_items, [], [], [], [], counts, mc.n_category_buckets, mc.n_price_buckets,
                           mc.n_popularity_buckets, mc.n_title_buckets, mc.max_title_tokens)
    ev = _eval_set(fit, valid_truth, mc.history_len, exclude_seen) if valid_truth is not None else None
    return TrainSpec(model=mc, meta=meta, params=params, log_q=log_sampling_prob(counts),
                     source=ArraySource(featurize.sequence_examples(fit, mc.history_len)), valid=ev,
                     checkpoint_dir=checkpoint_dir)


# ------------------------------------------------------------------ planted preference

@pytest.mark.parametrize("ema_decay,negatives,model_over", [
    (0.0, "in_batch", {}), (0.98, "in_batch", {}), (0.0, "all_items", {}),
    (0.0, "all_items", {"towers": "linear", "history_dropout": 0.5, "item_id_init": 0.05, "use_user_id": False})])
def test_learns_planted_group_preference(ema_decay, negatives, model_over):
    n_users = 200
    fit, valid = _planted(n_users)
    params = TrainParams(lr=0.01, batch_size=64, max_epochs=15, patience=5, use_gpu=False, seed=3,
                         ema_decay=ema_decay, negatives=negatives)
    spec = _spec(fit, valid, params, **model_over)
    res = train(spec)

    assert res["world_size"] == 1 and res["device"] == "cpu"
    assert res["examples_per_rank"] == len(fit)              # one example per event (no repeats here)
    assert 1 <= res["best_epoch"] <= len(res["history"]) <= 15
    model = load_model(spec.model, spec.meta, res["state_dict"])
    ev = spec.valid
    with torch.no_grad():
        item_vecs = model.all_item_vectors()
    users = np.arange(n_users)
    scores = score_fn(model, ev, "cpu", item_vecs)(users)
    group = np.arange(fit.n_items) // GROUP_SIZE
    own = (users % N_GROUPS)[:, None]

    # Each user has seen 5 of the 10 items of its group, so "new to the customer" only 5 own-group items
    # remain: the 5 best unseen items must be (nearly) all of them ...
    top5 = topk(scores, 5, exclude=fit.csr())
    share5 = (group[top5] == own).sum(1)
    assert (share5 >= 4).mean() >= 0.9, np.bincount(share5)
    # ... and over the whole catalog (seen items allowed) at least 8 of the top 10 are of the user's group
    top10 = topk(scores, 10)
    share10 = (group[top10] == own).sum(1)
    assert (share10 >= 8).mean() >= 0.9, np.bincount(share10)

    # the validation NDCG@10 (held-out item, seen items excluded) is far above a random scorer's
    rng = np.random.default_rng(0)
    rand = evaluate(lambda us: rng.random((len(us), fit.n_items)).astype(np.float32), ev.users, ev.truth,
                    ks=(10,), exclude=ev.exclude)["ndcg@10"]
    assert res["best_metric"] == pytest.approx(max(h["valid_ndcg@10"] for h in res["history"]))
    assert res["best_metric"] > 0.45
    assert res["best_metric"] > 3 * rand, (res["best_metric"], rand)
    # the returned weights are the best epoch's: re-evaluating them gives the recorded best metric
    again = trainer.evaluate_model(model, ev, ks=(10,))["ndcg@10"]
    assert again == pytest.approx(res["best_metric"], abs=1e-9)


# ------------------------------------------------------------------ determinism

def test_same_data_and_seed_give_identical_model():
    fit, valid = _planted(40)
    runs = []
    for _ in range(2):
        params = TrainParams(lr=0.01, batch_size=16, max_epochs=3, patience=5, use_gpu=False, seed=11)
        runs.append(train(_spec(fit, valid, params)))
    a, b = runs
    assert a["best_metric"] == b["best_metric"]
    assert a["best_epoch"] == b["best_epoch"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # and a different seed gives different weights
    other = train(_spec(fit, valid, TrainParams(lr=0.01, batch_size=16, max_epochs=1, use_gpu=False, seed=12)))
    assert not torch.equal(other["state_dict"]["item_id.weight"], a["state_dict"]["item_id.weight"])


# ------------------------------------------------------------------ early stopping

def test_early_stopping_when_nothing_improves():
    fit, valid = _planted(40)
    # lr=0: the weights cannot move, so the validation metric cannot improve after epoch 1. (A tiny lr such
    # as 1e-9 is NOT enough: an untrained model without metadata scores many items exactly alike, and a
    # 1e-9 step breaks those ties and moves NDCG by several points.)
    params = TrainParams(lr=0.0, batch_size=16, max_epochs=20, patience=2, use_gpu=False)
    res = train(_spec(fit, valid, params))
    # epoch 1 always counts as an improvement; then `patience` epochs without one
    assert len(res["history"]) == 1 + 2
    assert res["best_epoch"] == 1
    assert res["best_metric"] == pytest.approx(res["history"][0]["valid_ndcg@10"])
    assert len({h["valid_ndcg@10"] for h in res["history"]}) == 1


def test_early_stopping_returns_best_epoch_weights(monkeypatch, tmp_path):
    fit, valid = _planted(40)
    script = iter([0.10, 0.30, 0.20, 0.25, 0.30 + 1e-7, 0.9, 0.9])   # best at epoch 2; a tie is no improvement

    def fake_evaluate(model, ev, ks=(10,), device="cpu", return_topk=False):
        v = next(script)
        return {f"ndcg@{ks[0]}": v, f"recall@{ks[0]}": v}

    monkeypatch.setattr(trainer, "evaluate_model", fake_evaluate)
    params = TrainParams(lr=0.01, batch_size=16, max_epochs=10, patience=3, use_gpu=False)
    res = train(_spec(fit, valid, params, checkpoint_dir=str(tmp_path / "ckpt")))
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4, 5]
    assert [h["valid_ndcg@10"] for h in res["history"]] == [0.10, 0.30, 0.20, 0.25, 0.30 + 1e-7]
    assert res["best_epoch"] == 2 and res["best_metric"] == 0.30
    # a checkpoint per epoch (rank 0), and the returned weights are epoch 2's, not the last epoch's
    assert sorted(os.listdir(tmp_path / "ckpt")) == [f"epoch_{e:03d}.pt" for e in range(1, 6)]
    ck2 = torch.load(tmp_path / "ckpt" / "epoch_002.pt", weights_only=False)["state_dict"]
    ck5 = torch.load(tmp_path / "ckpt" / "epoch_005.pt", weights_only=False)["state_dict"]
    for k, v in res["state_dict"].items():
        assert torch.equal(v, ck2[k]), k
    assert not torch.equal(res["state_dict"]["item_id.weight"], ck5["item_id.weight"])


def test_fixed_epochs_refit_runs_exactly_n_epochs_without_validation(monkeypatch):
    fit, valid = _planted(40)

    def no_eval(*a, **k):
        raise AssertionError("a refit must not evaluate")

    monkeypatch.setattr(trainer, "evaluate_model", no_eval)
    params = TrainParams(lr=0.01, batch_size=16, max_epochs=20, patience=1, fixed_epochs=3, use_gpu=False)
    res = train(_spec(fit, None, params))
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3]
    assert res["best_epoch"] == 3
    assert np.isnan(res["best_metric"])
    assert all("valid_ndcg@10" not in h for h in res["history"])


def test_fixed_epochs_with_validation_record_it_but_never_stop_early_and_keep_the_last(monkeypatch, tmp_path):
    fit, valid = _planted(40)
    script = iter([0.30, 0.20, 0.10])          # worse every epoch: early stopping (patience 1) would stop at 2

    def fake_evaluate(model, ev, ks=(10,), device="cpu", return_topk=False):
        v = next(script)
        return {f"ndcg@{ks[0]}": v, f"recall@{ks[0]}": v}

    monkeypatch.setattr(trainer, "evaluate_model", fake_evaluate)
    params = TrainParams(lr=0.01, batch_size=16, max_epochs=20, patience=1, fixed_epochs=3, use_gpu=False)
    res = train(_spec(fit, valid, params, checkpoint_dir=str(tmp_path / "ckpt")))
    assert [h["valid_ndcg@10"] for h in res["history"]] == [0.30, 0.20, 0.10]
    assert res["best_epoch"] == 3 and res["best_metric"] == 0.10
    ck3 = torch.load(tmp_path / "ckpt" / "epoch_003.pt", weights_only=False)["state_dict"]
    for k, v in res["state_dict"].items():
        assert torch.equal(v, ck3[k]), k


# ------------------------------------------------------------------ weight average (EMA)

def test_weight_average_known_answer():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    avg = trainer.WeightAverage(model, decay=0.9)
    expected = 0.0
    for t, w in enumerate([1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0], start=1):
        with torch.no_grad():
            model.weight.fill_(w)            # what an optimiser step would have left
        avg.update()
        d = min(0.9, (1 + t) / (10 + t))     # warm-up: 0.18, 0.25, ... then 0.9 from step 80 on
        expected = d * expected + (1 - d) * w
        assert float(avg.model.weight) == pytest.approx(expected, rel=1e-6), t
    assert float(model.weight) == 4.0        # the model itself is untouched
    assert not avg.model.weight.requires_grad


def test_weight_average_is_what_is_validated_kept_and_checkpointed(tmp_path):
    fit, valid = _planted(40)
    params = TrainParams(lr=0.01, batch_size=16, max_epochs=3, patience=5, use_gpu=False, seed=5, ema_decay=0.9)
    res = train(_spec(fit, valid, params, checkpoint_dir=str(tmp_path / "ckpt")))
    ck = torch.load(tmp_path / "ckpt" / f"epoch_{res['best_epoch']:03d}.pt", weights_only=False)
    # the returned weights are the average's at the best epoch, not the raw weights ...
    for k, v in res["state_dict"].items():
        assert torch.equal(v, ck["ema_state_dict"][k]), k
    assert not torch.equal(res["state_dict"]["item_id.weight"], ck["state_dict"]["item_id.weight"])
    assert ck["ema_steps"] == res["best_epoch"] * res["steps_per_epoch"]
    # ... and their validation metric is the one recorded for that epoch
    spec = _spec(fit, valid, params)
    model = load_model(spec.model, spec.meta, res["state_dict"])
    assert trainer.evaluate_model(model, spec.valid, ks=(10,))["ndcg@10"] == pytest.approx(res["best_metric"], abs=1e-9)
    # a refit for the last epoch count, without validation, reproduces that epoch's average exactly
    refit = train(_spec(fit, None, TrainParams(lr=0.01, batch_size=16, fixed_epochs=3, use_gpu=False, seed=5,
                                               ema_decay=0.9)))
    last = torch.load(tmp_path / "ckpt" / "epoch_003.pt", weights_only=False)["ema_state_dict"]
    for k, v in refit["state_dict"].items():
        assert torch.equal(v, last[k]), k


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_weight_average_decay_out_of_range_rejected(bad):
    with pytest.raises(ValueError, match="ema_decay"):
        TrainParams(ema_decay=bad)


def test_validation_without_countable_users_still_returns_weights():
    fit, _ = _planted(12, per_user=4)
    # the validation pairs are items the users already have in train: with exclude_seen, no user is counted
    # and NDCG@10 is NaN every epoch
    valid = Interactions.from_arrays(fit.user[:5], fit.item[:5], fit.n_users, fit.n_items, time=fit.time[:5] + 1e6)
    spec = _spec(fit, valid, TrainParams(lr=0.01, batch_size=8, max_epochs=4, patience=2, use_gpu=False))
    try:
        res = train(spec)
    except ValueError:        # refusing such a validation set up front is acceptable too
        return
    assert res["best_epoch"] >= 1
    assert res["state_dict"] is not None
    load_model(spec.model, spec.meta, res["state_dict"])


@pytest.mark.parametrize("loss,extra", [("bpr", 0), ("mse", 0), ("softmax", 5)])
def test_other_losses_train_and_stay_finite(loss, extra):
    fit, valid = _planted(24, per_user=4)
    params = TrainParams(loss=loss, uniform_negatives=extra, lr=0.01, batch_size=16, max_epochs=2, use_gpu=False)
    res = train(_spec(fit, valid, params))
    assert len(res["history"]) == 2
    assert all(np.isfinite(h["train_loss"]) for h in res["history"])


def test_unknown_loss_rejected():
    with pytest.raises(ValueError):
        TrainParams(loss="hinge")


# ------------------------------------------------------------------ TorchDistributor, 2 processes on CPU

def test_torch_distributor_two_processes_cpu(spark):
    fit, valid = _planted(16, per_user=4)
    params = TrainParams(lr=0.01, batch_size=8, max_epochs=2, patience=5, use_gpu=False)
    spec = _spec(fit, valid, params, dim=8, hidden=16, history_len=4)
    res = launch(spark, spec, processes=2, launcher="distributor")
    assert res["world_size"] == 2
    assert res["device"] == "cpu"
    assert [h["epoch"] for h in res["history"]] == [1, 2]
    assert all("valid_ndcg@10" in h for h in res["history"])
    # each rank trained on its own half of the 48 examples (row-stride shards)
    assert res["examples_per_rank"] == len(fit) // 2
    model = load_model(spec.model, spec.meta, res["state_dict"])
    assert isinstance(model, TwoTower)
    assert not model.training
    with torch.no_grad():
        vecs = model.all_item_vectors()
    assert vecs.shape == (fit.n_items, 8) and torch.isfinite(vecs).all()


# ------------------------------------------------------------------ Spark -> petastorm -> trainer

PAIRS = [  # user, item, weight, count, first_time, time
    (0, 1, 1.0, 1.0, 100.0, 100.0),
    (0, 2, 2.0, 2.0, 200.0, 400.0),     # repeated: a second event at 400
    (1, 0, 1.0, 1.0, 50.0, 50.0),
    (1, 3, 1.0, 1.0, 60.0, 60.0),
    (2, 3, 1.0, 3.0, 10.0, 90.0),       # repeated
    (2, 1, 0.5, 1.0, 20.0, 20.0),
    (3, 2, 1.0, 2.0, 30.0, 30.0),       # count 2 but last == first: one event
]
PAIR_SCHEMA = "user long, item long, weight float, count float, first_time double, time double"


def _pairs_df(spark):
    df = spark.createDataFrame(PAIRS, PAIR_SCHEMA)
    assert tuple(df.columns) == PAIR_COLUMNS
    return df


@pytest.mark.parametrize("buckets,others_share", [(256, 0.0), (1, 0.5), (2, 0.5)])
def test_examples_frame_matches_sequence_examples(spark, buckets, others_share):
    # whatever the grouping of users into pandas calls, the rows are the per-user examples
    df = _pairs_df(spark)
    inter = to_interactions(df, 5, 4)
    expected = featurize.sequence_examples(inter, 3, others_share, seed=7)
    got = examples_frame(df, 5, 4, 3, others_share, seed=7, user_buckets=buckets).toPandas().sort_values(["user", "item", "weight"], kind="stable")
    exp = pd.DataFrame({"user": expected["user"], "item": expected["item"], "weight": expected["weight"],
                        "hist": [tuple(h) for h in expected["hist"]],
                        "feats": [tuple(np.round(f, 5)) for f in expected["feats"]]})
    exp = exp.sort_values(["user", "item", "weight"], kind="stable")
    assert len(got) == len(exp) == 9
    np.testing.assert_array_equal(got["user"], exp["user"])
    np.testing.assert_array_equal(got["item"], exp["item"])
    np.testing.assert_array_equal(got["weight"], exp["weight"])
    # rows of one (user, item, weight) may come in either order; compare as sorted multisets per key
    key = lambda d: sorted(zip(d["user"], d["item"], [tuple(h) for h in d["hist"]],  # noqa: E731
                               [tuple(np.round(np.asarray(f, np.float64), 5)) for f in d["feats"]]))
    assert key(got) == key(exp)


def test_fit_two_tower_through_petastorm(spark, tmp_path):
    df = _pairs_df(spark)
    n_users, n_items = 5, 4
    fit = to_interactions(df, n_users, n_items)
    catalog = Catalog(pd.DataFrame({"idx": [0, 1, 2, 3], "item_id": ["a", "b", "c", "d"],
                                    "title": ["red shoe", None, "blue hat", "x"],
                                    "category": ["c1", None, "c2", "c1"], "price": [1.0, None, 3.0, 2.0]}))
    mc = ModelConfig(n_users=n_users, n_items=n_items, dim=4, hidden=8, history_len=3, n_category_buckets=8,
                     n_price_buckets=4, n_popularity_buckets=4, n_title_buckets=16, max_title_tokens=2)
    params = TrainParams(lr=0.01, batch_size=4, max_epochs=2, patience=5, use_gpu=False)
    ev = _eval_set(fit, fit, mc.history_len, exclude_seen=False)
    res = fit_two_tower(spark, df, fit, catalog, mc, params, str(tmp_path / "work"), ev, processes=1,
                        launcher="inprocess", local_mode=True, tag="t")
    n_events = 9                                         # 7 pairs + 2 repeat events
    assert res["examples"] == n_events
    assert res["examples_per_rank"] == n_events
    assert res["world_size"] == 1
    assert [h["epoch"] for h in res["history"]] == [1, 2]
    assert res["fit_s"] > 0
    model = res["model"]
    assert isinstance(model, TwoTower) and not model.training
    # the model carries the catalog's metadata
    counts = np.bincount(fit.item, minlength=n_items).astype(np.float64)
    meta = catalog.item_meta(n_items, counts, mc)
    np.testing.assert_array_equal(model.meta_category.numpy(), meta.category)
    np.testing.assert_array_equal(model.meta_title.numpy(), meta.title)
    np.testing.assert_array_equal(model.meta_popularity.numpy(), meta.popularity)
    # checkpoints written, the petastorm cache deleted afterwards
    assert sorted(os.listdir(tmp_path / "work" / "checkpoints" / "t")) == ["epoch_001.pt", "epoch_002.pt"]
    assert os.listdir(tmp_path / "work" / "petastorm") == []
    # the same state loads into a fresh model
    load_model(mc, meta, res["state_dict"])


def test_eval_set_from_fit_and_truth():
    fit = Interactions.from_arrays([0, 0, 1], [1, 2, 0], 3, 4, time=[10.0, 20.0, 5.0])
    truth = Interactions.from_arrays([0, 2], [3, 1], 3, 4, time=[30.0, 40.0])
    ev = _eval_set(fit, truth, 2, exclude_seen=True)
    assert isinstance(ev, EvalSet)
    np.testing.assert_array_equal(ev.users, [0, 2])
    # the state just after the last fitted event: user 0's items 2 then 1, user 1's item 0, user 2 cold
    np.testing.assert_array_equal(ev.history, [[3, 2], [1, 0], [0, 0]])
    assert ev.feats[2].sum() == 0 and ev.feats[0, -1] == 1.0
    np.testing.assert_array_equal(ev.exclude.toarray(), fit.csr().toarray())
    np.testing.assert_array_equal(ev.segments["new"], [False, False, True])
    np.testing.assert_array_equal(ev.segments["returning"], [True, True, False])
    assert _eval_set(fit, truth, 2, exclude_seen=False).exclude is None


def test_the_same_train_function_runs_under_torchrun(tmp_path):
    import subprocess
    import sys

    from training.torchrun_main import save_spec

    fit, valid = _planted(24, per_user=4)
    spec = _spec(fit, valid, TrainParams(lr=0.01, batch_size=16, max_epochs=2, patience=2, use_gpu=False))
    save_spec(spec, str(tmp_path / "spec.pkl"))
    out = tmp_path / "result.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training.torchrun_main", str(tmp_path / "spec.pkl"), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = torch.load(out, weights_only=False)
    assert res["world_size"] == 2 and len(res["history"]) == 2
    load_model(spec.model, spec.meta, res["state_dict"])


def test_negatives_auto_takes_the_whole_catalog_only_when_it_is_small():
    auto = TrainParams(negatives="auto", use_gpu=False)
    assert auto.full_softmax(trainer.ALL_ITEMS_MAX) and not auto.full_softmax(trainer.ALL_ITEMS_MAX + 1)
    assert TrainParams(negatives="all_items").full_softmax(10 ** 7)
    assert not TrainParams(negatives="in_batch").full_softmax(10)
    assert not TrainParams(negatives="auto", loss="bpr").full_softmax(10)
    with pytest.raises(ValueError, match="negatives"):
        TrainParams(negatives="some")
    with pytest.raises(ValueError, match="needs loss=softmax"):
        TrainParams(negatives="all_items", loss="bpr")
