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
