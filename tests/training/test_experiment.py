from jobs.config import load_config
from training.experiment import candidate_label, search_candidates, train_params


def test_search_candidates_cross_every_search_entry_with_every_history_mode():
    optim = load_config(env="local", environ={}, overrides={"training": {"optim": {
        "others_share": [0.0, 1.0], "search": [{}, {"batch_size": 512, "repeat_weight": 3.0}]}}}).training.optim
    cands = search_candidates(optim)
    assert cands == [{"others_share": 0.0}, {"others_share": 1.0},
                     {"batch_size": 512, "repeat_weight": 3.0, "others_share": 0.0},
                     {"batch_size": 512, "repeat_weight": 3.0, "others_share": 1.0}]
    assert [candidate_label(c) for c in cands[1:3]] == ["others_share=1",
                                                        "batch_size=512,others_share=0,repeat_weight=3"]
    assert candidate_label({}) == "defaults"


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


def _serve_fit_order(monkeypatch, launcher: str):
    """What run_experiment does, in order, with the phases and the serve fit replaced by recorders."""
    import threading
    from types import SimpleNamespace

    import training.experiment as ex
    tcfg = load_config(env="local", environ={}, overrides={"training": {"launcher": launcher}}).training
    events, serve_started = [], threading.Event()

    def phase(spark, name, *args, on_chosen=None, **kwargs):
        events.append(f"{name} fits")
        on_chosen({"params": "kept-params", "best_epoch": 3})
        if launcher == "distributor":   # the serve fit runs while the phase goes on to its baselines
            assert serve_started.wait(30), "the serve fit did not start when the settings were chosen"
        events.append(f"{name} baselines")
        return SimpleNamespace(best_epoch=3, params="kept-params", model="valid-model", blend_weight=None)

    def serve_fit(spark, data, tcfg_, mcfg, params, best_epoch, work_dir):
        serve_started.set()
        events.append(f"serve fit {params} {best_epoch} epochs")
        return {"model": "serve-model"}

    monkeypatch.setattr(ex, "run_phase", phase)
    monkeypatch.setattr(ex, "_serve_fit", serve_fit)
    data = ex.ExperimentData(name="t", n_users=3, n_items=2, catalog=None, train=None, valid=None)
    result = ex.run_experiment(None, data, tcfg, "/nonexistent", serve_refit=True, keep_work=True)
    assert result.serve_model == "serve-model" and result.params == "kept-params"
    return events


def test_serve_fit_starts_beside_the_baselines_with_torch_distributor(monkeypatch):
    assert _serve_fit_order(monkeypatch, "distributor") == [
        "valid fits", "serve fit kept-params 3 epochs", "valid baselines"]


def test_serve_fit_runs_last_and_alone_in_process(monkeypatch):
    assert _serve_fit_order(monkeypatch, "inprocess") == [
        "valid fits", "valid baselines", "serve fit kept-params 3 epochs"]
