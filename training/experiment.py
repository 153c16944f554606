"""One training experiment: the two-tower model and every baseline, fitted and
evaluated on the same split, in two phases.

* ``valid`` phase: fit on ``train``; the two-tower stops early on validation
  NDCG@K; every baseline is fitted on ``train`` and evaluated on ``valid``; the
  weight of "buy again" in the served blend is chosen here. These are the
  numbers the promotion gate reads.
* ``test`` phase (when a test split exists): everything is refitted on
  ``train + valid`` (the two-tower for exactly the selected number of
  epochs) and evaluated once on ``test``.
* ``serve`` fit (optional): the two-tower refitted on every pair, the model
  that is registered for scoring.

Everything is evaluated by full ranking over the whole catalog
(``training.metrics.evaluate``), with the customer's earlier items excluded
from candidates and hits when ``exclude_seen`` is set ("new to the
customer"), and split into new (no earlier pairs) and returning users.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from pyspark.sql import DataFrame, SparkSession

from training import baselines as bl
from training.baseline_search import TunedBaseline
from training.baseline_search import tune as tune_baseline
from training.data import Catalog, to_interactions
from training.featurize import user_state
from training.interactions import Interactions
from training.metrics import evaluate, format_metrics
from training.model import ModelConfig, TwoTower
from training.search import SearchPlan, candidate_label, search_candidates, split_override
from training.served import ServedSettings, build_served, catalog_arrays
from training.fit import fit_two_tower
from training.trainer import EvalSet, TrainParams, score_fn

log = logging.getLogger(__name__)

MODEL = "two_tower"
BLEND = "two_tower+buy_again"
SERVED = "served"          # the list as served: blend of sources, diversity, rules (training.served)
CHALLENGER_LABELS = {MODEL: "two-tower", BLEND: "two-tower blended with buy-again", SERVED: "served list"}


@dataclass
class ExperimentData:
    """Pairs DataFrames (``training.data.PAIR_COLUMNS``) of each split, in one index space."""
    name: str
    n_users: int
    n_items: int
    catalog: Catalog
    train: DataFrame
    valid: DataFrame
    test: Optional[DataFrame] = None
    exclude_seen: bool = False
    info: Dict[str, object] = field(default_factory=dict)
    served: Optional[ServedSettings] = None   # score the list as served too (training.served)


@dataclass
class PhaseResult:
    phase: str
    metrics: Dict[str, dict]              # model or baseline -> metrics
    timings: Dict[str, dict]              # model or baseline -> fit_s, recommend_s
    topk: Dict[str, np.ndarray]           # for the report's long-tail plots
    skipped: Dict[str, str]
    history: List[dict]
    best_epoch: int
    blend_weight: Optional[float]
    model: TwoTower
    train_result: dict
    item_counts: np.ndarray
    n_fit_pairs: int
    n_eval_pairs: int
    params: Optional[TrainParams] = None   # the model's training parameters (others_share as chosen)
    model_config: Optional[ModelConfig] = None   # the kept fit's model settings (model.* overrides applied)
    kept: Dict[str, object] = field(default_factory=dict)   # the kept candidate's overrides of the defaults
    served: Optional[Dict[str, object]] = None     # the served list's blend settings (weights, mmr_strength)
    served_tried: Dict[str, float] = field(default_factory=dict)     # served setting label -> metric
    baselines: Dict[str, dict] = field(default_factory=dict)         # baseline -> kept grid entry (overrides)
    baseline_params: Dict[str, dict] = field(default_factory=dict)   # baseline -> every setting of its kept fit
    baseline_tried: Dict[str, Dict[str, float]] = field(default_factory=dict)  # baseline -> entry -> metric


@dataclass
class ExperimentResult:
    valid: PhaseResult
    test: Optional[PhaseResult]
    serve_model: TwoTower
    model_config: ModelConfig
    params: TrainParams
    plan: Optional[SearchPlan] = None


def _eval_set(fit: Interactions, truth: Interactions, history_len: int, exclude_seen: bool) -> EvalSet:
    # the users' state at the end of the fitted period (just after its last event)
    cut = float(max(fit.time.max(), fit.first_times.max())) + 1.0 if len(fit) else 0.0
    hist, feats = user_state(fit, at=cut, H=history_len)
    users = truth.users()
    has_history = np.zeros(fit.n_users, bool)
    has_history[np.unique(fit.user)] = True
    return EvalSet(users=users, history=hist, feats=feats, truth=truth.csr(),
                   exclude=fit.csr() if exclude_seen else None,
                   segments={"returning": has_history, "new": ~has_history})


def _history_width(ev: EvalSet, history_len: int) -> EvalSet:
    """``ev`` with each user's ``history_len`` most recent items (its history is most recent first and
    at least that wide): the state a model with that history length scores from."""
    return ev if ev.history.shape[1] == history_len else replace(ev, history=ev.history[:, :history_len])


def _evaluate_scorer(name: str, fn: Callable[[np.ndarray], np.ndarray], ev: EvalSet, ks) -> dict:
    t0 = time.time()
    m = evaluate(fn, ev.users, ev.truth, ks=ks, exclude=ev.exclude, segments=ev.segments, return_topk=True)
    m["recommend_s"] = time.time() - t0
    log.info("  %-22s %s", name, format_metrics(m, [f"ndcg@{ks[0]}", f"recall@{ks[-1]}", "mrr"]))
    return m


def blend_scorer(model_fn, buy_again: bl.BuyAgain, weight: float):
    """The served list's score: the model's cosine plus ``weight`` times the customer's own repeat-purchase
    signal (0 off history; 0.5..1.5 on history items, by decayed frequency)."""
    def fn(users: np.ndarray) -> np.ndarray:
        s = model_fn(users)
        if weight:
            ba = buy_again.score(users)
            s = s + weight * np.where(ba >= 1.0, ba - 0.5, 0.0).astype(np.float32)
        return s
    return fn


def run_phase(spark: SparkSession, phase: str, fit_df: DataFrame, eval_df: DataFrame, data: ExperimentData,
              tcfg, model_cfg: ModelConfig, params: TrainParams, work_dir: str,
              blend_weight: Optional[float] = None, candidates: Sequence[Dict[str, object]] = (),
              on_chosen: Optional[Callable[[dict], None]] = None, monitor: Optional[bool] = None,
              baseline_kept: Optional[Dict[str, dict]] = None,
              served: Optional[Dict[str, object]] = None) -> PhaseResult:
    """Fit and evaluate the model and every baseline on one split. ``candidates``: overrides of
    ``params`` (e.g. ``{"others_share": 1.0, "batch_size": 512}``), each fitted; the best on this split's
    metric is kept. ``on_chosen``: called with the kept fit's result (``best_epoch``, ``params``) as soon
    as it is known, before the baselines, so a later fit that needs only those can start. ``monitor``:
    evaluate on this split after every epoch (default: only when early stopping, i.e. without
    ``params.fixed_epochs``; a phase whose split is the test split must never set it).
    ``baseline_kept``: baseline -> the grid entry to fit (chosen on validation before); a baseline not
    in it searches its grid (``training.baseline_search``, :mod:`training.baseline_search`) on this
    split, so the test phase must pass the valid phase's choice. ``served``: the served list's blend
    settings chosen before (else, with ``data.served``, its candidates are tried on this split)."""
    ks = tuple(tcfg.ks)
    fit = to_interactions(fit_df, data.n_users, data.n_items)
    truth = to_interactions(eval_df, data.n_users, data.n_items)
    overs = list(candidates or [{}])
    # a candidate may set model.<field> (e.g. model.history_len): each fit gets its own model settings, and
    # the users' state is computed once, as wide as the widest history, and cut per model
    configs = [replace(model_cfg, **split_override(o)[1]) for o in overs]
    ev_all = _eval_set(fit, truth, max(c.history_len for c in configs), data.exclude_seen)
    log.info("[%s] %s: fit on %d pairs, evaluate %d users / %d pairs (%s)", data.name, phase, len(fit),
             len(ev_all.users), len(truth), "new to the customer" if data.exclude_seen else "all items")
    metrics, timings, topk, skipped = {}, {}, {}, {}

    res, tried = None, {}

    def fit_candidate(i: int) -> dict:
        p = replace(params, **split_override(overs[i])[0])
        mc = configs[i]
        watch = p.fixed_epochs is None if monitor is None else monitor
        r = fit_two_tower(spark, fit_df, fit, data.catalog, mc, p, work_dir,
                          _history_width(ev_all, mc.history_len) if watch else None, tcfg.processes, tcfg.launcher,
                          tcfg.distributor_local_mode, f"{data.name}-{phase}-c{i}")
        r["params"], r["kept"], r["model_config"] = p, dict(overs[i]), mc
        return r

    # candidates are independent fits: several at once keep every core busy (each rank of a small model
    # runs fastest single-threaded); in-process training shares one interpreter, so it runs them in turn
    workers = getattr(tcfg, "parallel_fits", 1) if tcfg.launcher == "distributor" else 1
    results = fit_all(fit_candidate, len(overs), workers)
    for over, r in zip(overs, results):          # in candidate order: a tie keeps the first
        tried[candidate_label(over)] = r["best_metric"]
        if res is None or (r["best_metric"] > res["best_metric"]):
            res = r
    if len(tried) > 1:
        log.info("[%s] %s: candidates tried %s, kept %s", data.name, phase,
                 {k: round(v, 4) for k, v in tried.items()}, max(tried, key=tried.get))
    res["candidates_tried"] = tried
    if on_chosen is not None:
        on_chosen(res)
    model = res["model"]
    ev = _history_width(ev_all, res["model_config"].history_len)
    with torch.no_grad():
        item_vecs = model.all_item_vectors()
    model_fn = score_fn(model, ev, "cpu", item_vecs)
    m = _evaluate_scorer(MODEL, model_fn, ev, ks)
    timings[MODEL] = {"fit_s": res["fit_s"], "recommend_s": m["recommend_s"]}
    metrics[MODEL], topk[MODEL] = m, m.pop("topk")

    fitted: Dict[str, object] = {}
    tuned: Dict[str, TunedBaseline] = {}
    key = f"ndcg@{ks[0]}"

    def on_split(rec) -> float:     # the tuning metric: the model's, on this phase's split (validation)
        return evaluate(rec.score, ev.users, ev.truth, ks=(ks[0],), exclude=ev.exclude)[key]

    for name in tcfg.baselines:
        # a fixed choice (the test phase, a reusing nightly) fits exactly it; else the grid is searched
        entries = ([baseline_kept[name]] if baseline_kept is not None and name in baseline_kept
                   else tcfg.baseline_search.get(name, []))
        try:
            tb = tune_baseline(name, tcfg.baseline_params.get(name, {}), entries, fit, on_split, spark=spark)
        except bl.BaselineSkipped as e:
            skipped[name] = str(e)
            log.info("  %-22s skipped: %s", name, e)
            continue
        tuned[name] = tb
        rec = fitted[name] = tb.model
        m = _evaluate_scorer(name, rec.score, ev, ks)
        timings[name] = {"fit_s": tb.fit_s, "recommend_s": m["recommend_s"], "search_s": tb.search_s}
        metrics[name], topk[name] = m, m.pop("topk")

    ba = fitted.get("buy_again")
    if ba is not None and not data.exclude_seen:
        if blend_weight is None:      # chosen on validation only
            best = (-1.0, 0.0)
            for w in tcfg.blend_weights:
                v = evaluate(blend_scorer(model_fn, ba, w), ev.users, ev.truth, ks=(ks[0],))[key]
                best = max(best, (v, w))
            blend_weight = best[1]
        m = _evaluate_scorer(f"{BLEND} (w={blend_weight:g})", blend_scorer(model_fn, ba, blend_weight), ev, ks)
        timings[BLEND] = {"fit_s": res["fit_s"] + timings["buy_again"]["fit_s"], "recommend_s": m["recommend_s"]}
        metrics[BLEND], topk[BLEND] = m, m.pop("topk")

    served_kept, served_tried = None, {}
    if data.served is not None:
        served_kept, served_tried = _evaluate_served(data, model, fit, ev, fitted.get("buy_again"), ks, served,
                                                     metrics, timings, topk)

    return PhaseResult(phase=phase, metrics=metrics, timings=timings, topk=topk, skipped=skipped,
                       history=res["history"], best_epoch=res["best_epoch"], blend_weight=blend_weight,
                       model=model, train_result={k: v for k, v in res.items()
                                                  if k not in ("state_dict", "model", "model_config")},
                       params=res["params"], kept=res["kept"], model_config=res["model_config"],
                       served=served_kept, served_tried=served_tried,
                       baselines={n: t.kept for n, t in tuned.items()},
                       baseline_params={n: t.params for n, t in tuned.items()},
                       baseline_tried={n: t.tried for n, t in tuned.items() if t.tried},
                       item_counts=np.bincount(fit.item, minlength=fit.n_items).astype(np.float64),
                       n_fit_pairs=len(fit), n_eval_pairs=len(truth))


def served_label(setting: Mapping[str, object]) -> str:
    w = setting["weights"]
    return ("+".join(f"{k}:{v:g}" for k, v in w.items()) + f",mmr={setting['mmr_strength']:g}")


def _evaluate_served(data: ExperimentData, model: TwoTower, fit: Interactions, ev: EvalSet, buy_again,
                     ks, chosen: Optional[Dict[str, object]], metrics: Dict[str, dict], timings: Dict[str, dict],
                     topk: Dict[str, np.ndarray]):
    """Score the list as served (``training.served``): the blend settings ``chosen`` (a later phase), or
    each of ``data.served.candidates()`` on this split, keeping the best (validation). Adds ``SERVED`` to
    ``metrics``; returns (kept setting, {label: metric} of the settings tried)."""
    t0 = time.time()
    settings = data.served
    if data.exclude_seen:       # "new to the customer": the served list leaves out what they bought
        settings = replace(settings, exclude_bought=True)
    if buy_again is None:
        buy_again = bl.BuyAgain().fit(fit)
    item_ids, categories = catalog_arrays(data.catalog.frame if data.catalog is not None else None, fit.n_items)
    lists = build_served(model, fit, ev.history, ev.feats, buy_again.history_, item_ids, categories, settings)
    key = f"ndcg@{ks[0]}"
    tried: Dict[str, float] = {}
    if chosen is None:
        best = None
        lists.memo = True       # every setting on the same users: the model's candidates once, the kept lists reused
        for cand in settings.candidates():
            weights = {k: v for k, v in cand["weights"].items() if not (data.exclude_seen and k == "buy_again")}
            cand = {**cand, "weights": weights or {"personal": 1.0}}
            v = evaluate(lists.score_fn(cand["weights"], cand["mmr_strength"]), ev.users, ev.truth, ks=(ks[0],),
                         exclude=ev.exclude)[key]
            tried[served_label(cand)] = v
            if best is None or v > best[0]:
                best = (v, cand)
            lists.keep_only(best[1]["weights"], best[1]["mmr_strength"])
        chosen = best[1]
        lists.keep_only(chosen["weights"], chosen["mmr_strength"], candidates=False)
        if len(tried) > 1:
            log.info("  %-22s blend settings tried: %s; kept %s", SERVED,
                     {k: round(v, 4) for k, v in tried.items()}, served_label(chosen))
    m = _evaluate_scorer(f"{SERVED} ({served_label(chosen)})",
                         lists.score_fn(chosen["weights"], chosen["mmr_strength"]), ev, ks)
    timings[SERVED] = {"fit_s": 0.0, "recommend_s": m["recommend_s"], "search_s": time.time() - t0}
    metrics[SERVED], topk[SERVED] = m, m.pop("topk")
    return chosen, tried


def fit_all(fit_one: Callable[[int], dict], n: int, workers: int) -> List[dict]:
    """``[fit_one(0), ..., fit_one(n - 1)]``, at most ``workers`` at a time, in index order whatever order
    they finish in; the first failure is raised (after the running fits end)."""
    workers = max(1, min(n, workers))
    if workers == 1:
        return [fit_one(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fit") as pool:
        return list(pool.map(fit_one, range(n)))


def model_config(tcfg, n_users: int, n_items: int) -> ModelConfig:
    return ModelConfig(n_users=n_users, n_items=n_items, **tcfg.model.model_dump())


def train_params(tcfg, **over) -> TrainParams:
    d = tcfg.optim.model_dump()
    d["others_share"] = d["others_share"][0]
    d.pop("search", None)
    d.update(over)
    return TrainParams(**d)


def run_experiment(spark: SparkSession, data: ExperimentData, tcfg, work_dir: str,
                   serve_refit: bool = False, keep_work: bool = False,
                   plan: Optional[SearchPlan] = None) -> ExperimentResult:
    """The valid phase, the test phase (when ``data.test``) and, with ``serve_refit``, a final fit on
    every pair for serving. Returns the model to register (the last one fitted).

    ``plan`` (``training.search.plan_search``): search the configured settings on validation (the
    default), or reuse settings and epochs an earlier search kept: then the valid phase fits them for
    exactly those epochs (evaluating on validation after each) and keeps that fit.

    The serve fit needs only the epochs and settings the valid phase keeps, so with TorchDistributor it
    starts as soon as they are known (at once when the plan reuses them) and runs beside the rest of
    the experiment (the valid fit, the baselines, the test phase): one single-threaded rank leaves a
    core free, which the baselines' Spark jobs and the other fits use. In-process training shares this
    interpreter (and torch's global state), so there it runs last, alone. Either way it is the same fit
    with the same inputs and seed.
    """
    mcfg = model_config(tcfg, data.n_users, data.n_items)
    params = train_params(tcfg)
    candidates = search_candidates(tcfg.optim)
    if plan is not None:
        log.info("[%s] %s", data.name, plan.reason)
        candidates = plan.candidates
        if plan.reuses:
            params = replace(params, fixed_epochs=plan.fixed_epochs)
    beside = serve_refit and tcfg.launcher == "distributor"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-fit") as pool:
        serve_job: Dict[str, Future] = {}

        def start_serve_fit(chosen: dict) -> None:
            if beside and "fit" not in serve_job:
                serve_job["fit"] = pool.submit(_serve_fit, spark, data, tcfg, chosen["model_config"],
                                               chosen["params"], chosen["best_epoch"], work_dir)

        if plan is not None and plan.reuses:   # everything the serve fit needs is known already
            optim_over, model_over = split_override(candidates[0])
            start_serve_fit({"params": replace(params, **optim_over), "model_config": replace(mcfg, **model_over),
                             "best_epoch": plan.fixed_epochs})
        valid = run_phase(spark, "valid", data.train, data.valid, data, tcfg, mcfg, params, work_dir,
                          candidates=candidates, on_chosen=start_serve_fit, monitor=True,
                          baseline_kept=plan.baselines if plan is not None and plan.reuses else None,
                          served=plan.served if plan is not None and plan.reuses else None)
        epochs = max(1, valid.best_epoch)
        test = None
        serve_model = valid.model
        if data.test is not None and getattr(tcfg, "evaluate_test", True):
            # the test phase never early-stops on test: the epochs chosen on validation
            refit = replace(valid.params, fixed_epochs=epochs)
            fit_df = data.train.unionByName(data.valid) if tcfg.refit else data.train
            test = run_phase(spark, "test", fit_df, data.test, data, tcfg, valid.model_config, refit, work_dir,
                             blend_weight=valid.blend_weight, baseline_kept=valid.baselines, served=valid.served)
            serve_model = test.model
        if serve_refit:
            serve = (serve_job["fit"].result() if beside else
                     _serve_fit(spark, data, tcfg, valid.model_config, valid.params, valid.best_epoch, work_dir))
            serve_model = serve["model"]
    if not keep_work:
        shutil.rmtree(os.path.join(work_dir, "petastorm"), ignore_errors=True)
    return ExperimentResult(valid=valid, test=test, serve_model=serve_model, model_config=valid.model_config,
                            params=valid.params, plan=plan)


def _serve_fit(spark: SparkSession, data: ExperimentData, tcfg, mcfg: ModelConfig, params: TrainParams,
               best_epoch: int, work_dir: str) -> dict:
    """The serving model: the kept settings refitted on every pair for the epochs chosen on validation."""
    everything = data.train.unionByName(data.valid)
    if data.test is not None:
        everything = everything.unionByName(data.test)
    fit = to_interactions(everything, data.n_users, data.n_items)
    return fit_two_tower(spark, everything, fit, data.catalog, mcfg, replace(params, fixed_epochs=max(1, best_epoch)),
                         work_dir, None, tcfg.processes, tcfg.launcher, tcfg.distributor_local_mode,
                         f"{data.name}-serve")
