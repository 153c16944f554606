from config import load_config
from training.experiment import train_params
from training.search import candidate_label


def test_train_params_takes_the_first_history_mode_and_ignores_search():
    tcfg = load_config(env="local", environ={}, overrides={"training": {"optim": {
        "others_share": [1.0, 0.0], "search": [{"batch_size": 512}]}}}).training
    p = train_params(tcfg, repeat_weight=2.0)
    assert p.others_share == 1.0 and p.repeat_weight == 2.0 and p.batch_size == tcfg.optim.batch_size


def test_fit_all_runs_fits_at_once_and_keeps_candidate_order():
    import threading
    import time
    from training.experiment import fit_all
    both = threading.Barrier(2, timeout=30)   # only passes when two fits run at the same time
    running, peak, lock = [0], [0], threading.Lock()

    def fit(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if i < 2:
            both.wait()
        time.sleep(0.05 * (3 - i))            # later candidates finish first
        with lock:
            running[0] -= 1
        return {"i": i}

    assert fit_all(fit, 3, workers=2) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert peak[0] == 2


def test_fit_all_one_worker_is_sequential_and_failures_surface():
    import pytest
    from training.experiment import fit_all
    order = []
    assert fit_all(lambda i: order.append(i) or i, 3, workers=1) == [0, 1, 2] and order == [0, 1, 2]

    def bad(i):
        if i == 1:
            raise RuntimeError("candidate 1 failed")
        return i
    with pytest.raises(RuntimeError, match="candidate 1 failed"):
        fit_all(bad, 3, workers=2)


def _serve_fit_order(monkeypatch, launcher: str, plan=None):
    """What run_experiment does, in order, with the phases and the serve fit replaced by recorders."""
    import threading
    from types import SimpleNamespace

    import training.experiment as ex
    tcfg = load_config(env="local", environ={}, overrides={"training": {"launcher": launcher,
                                                                        "optim": {"search": [{}]}}}).training
    events, serve_started = [], threading.Event()

    def phase(spark, name, fit_df, eval_df, data, tcfg_, mcfg, params, work_dir, candidates=(), on_chosen=None,
              **kwargs):
        if launcher == "distributor" and plan is not None and plan.reuses:
            assert serve_started.wait(30), "the serve fit did not start before the valid fit"
        events.append(f"{name} fits {[candidate_label(c) for c in candidates]} fixed={params.fixed_epochs}")
        on_chosen({"params": "kept-params", "model_config": "kept-model", "best_epoch": 3})
        if launcher == "distributor":   # the serve fit runs while the phase goes on to its baselines
            assert serve_started.wait(30), "the serve fit did not start when the settings were chosen"
        events.append(f"{name} baselines")
        return SimpleNamespace(best_epoch=3, params="kept-params", model="valid-model", blend_weight=None,
                               model_config="kept-model")

    def serve_fit(spark, data, tcfg_, mcfg, params, best_epoch, work_dir):
        serve_started.set()
        label = params if isinstance(params, str) else f"others_share={params.others_share:g}"
        model = mcfg if isinstance(mcfg, str) else f"towers={mcfg.towers}"
        events.append(f"serve fit {label} {model} {best_epoch} epochs")
        return {"model": "serve-model"}

    monkeypatch.setattr(ex, "run_phase", phase)
    monkeypatch.setattr(ex, "_serve_fit", serve_fit)
    data = ex.ExperimentData(name="t", n_users=3, n_items=2, catalog=None, train=None, valid=None)
    result = ex.run_experiment(None, data, tcfg, "/nonexistent", serve_refit=True, keep_work=True, plan=plan)
    assert result.serve_model == "serve-model" and result.params == "kept-params" and result.plan is plan
    assert result.model_config == "kept-model"      # the kept fit's model settings, not the configured ones
    return events


def test_serve_fit_starts_beside_the_baselines_with_torch_distributor(monkeypatch):
    assert _serve_fit_order(monkeypatch, "distributor") == [
        "valid fits ['others_share=0', 'others_share=1'] fixed=None", "serve fit kept-params kept-model 3 epochs",
        "valid baselines"]


def test_serve_fit_runs_last_and_alone_in_process(monkeypatch):
    assert _serve_fit_order(monkeypatch, "inprocess") == [
        "valid fits ['others_share=0', 'others_share=1'] fixed=None", "valid baselines",
        "serve fit kept-params kept-model 3 epochs"]


def test_a_reusing_plan_fits_only_the_kept_settings_and_starts_the_serve_fit_first(monkeypatch):
    from datetime import date

    from training.search import SearchPlan
    plan = SearchPlan([{"others_share": 1.0}], date(2026, 10, 22), "abc", 2, "reusing")
    assert _serve_fit_order(monkeypatch, "distributor", plan) == [
        "serve fit others_share=1 towers=mlp 2 epochs", "valid fits ['others_share=1'] fixed=2", "valid baselines"]
    # in-process: the same fits, the serve fit last
    assert _serve_fit_order(monkeypatch, "inprocess", plan) == [
        "valid fits ['others_share=1'] fixed=2", "valid baselines", "serve fit kept-params kept-model 3 epochs"]


def test_a_reused_setting_with_model_fields_reaches_the_serve_fit(monkeypatch):
    from datetime import date

    from training.search import SearchPlan
    plan = SearchPlan([{"others_share": 1.0, "model.towers": "linear"}], date(2026, 10, 22), "abc", 2, "reusing")
    assert _serve_fit_order(monkeypatch, "distributor", plan)[0] == "serve fit others_share=1 towers=linear 2 epochs"


def test_history_width_keeps_each_users_most_recent_items():
    import numpy as np
    import scipy.sparse as sp

    from training.experiment import _history_width
    from training.trainer import EvalSet
    ev = EvalSet(users=np.array([0, 1]), history=np.array([[5, 4, 3], [2, 0, 0]]),
                 feats=np.zeros((2, 3), np.float32), truth=sp.csr_matrix((2, 6)))
    assert _history_width(ev, 3) is ev
    assert _history_width(ev, 2).history.tolist() == [[5, 4], [2, 0]]
