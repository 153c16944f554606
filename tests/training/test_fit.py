"""training.fit's placement: how many TorchDistributor processes, on GPUs or the CPU, from ``training.processes``
and the GPU resources the session was given; checked with a stand-in session and distributor (no Spark, no GPU)."""
from types import SimpleNamespace

import pytest

from config import ConfigError, load_config
from training import fit
from training.trainer import TrainParams, TrainSpec


def _session(**conf):
    """A stand-in SparkSession whose SparkConf holds ``conf`` (what jobs/spark.py would have set)."""
    return SimpleNamespace(sparkContext=SimpleNamespace(getConf=lambda: dict(conf)))


LOCAL_2_GPUS = {"spark.driver.resource.gpu.amount": "2",
                "spark.driver.resource.gpu.discoveryScript": "/x/conf/gpu_discovery.sh"}


def _spec(use_gpu: bool = True) -> TrainSpec:
    return TrainSpec(model=None, meta=None, params=TrainParams(use_gpu=use_gpu), log_q=None, source=None)


@pytest.fixture
def distributor(monkeypatch):
    """TorchDistributor replaced where training.fit imports it: records its arguments and what ``run`` got."""
    calls = []

    class FakeDistributor:
        def __init__(self, num_processes, local_mode, use_gpu):
            calls.append({"num_processes": num_processes, "local_mode": local_mode, "use_gpu": use_gpu})

        def run(self, fn, spec):
            calls[-1]["fn"], calls[-1]["spec"] = fn, spec
            return {"device": "cuda" if spec.params.use_gpu else "cpu", "world_size": calls[-1]["num_processes"]}

    monkeypatch.setattr(fit, "TorchDistributor", FakeDistributor)
    return calls


@pytest.fixture
def gpus(monkeypatch):
    """torch sees ``n`` GPUs (set ``gpus(n)``)."""
    def see(n: int):
        monkeypatch.setattr(fit.torch.cuda, "device_count", lambda: n)
    return see


def test_auto_is_one_process_per_gpu_with_use_gpu(distributor, gpus):
    gpus(2)
    result = fit.launch(_session(**LOCAL_2_GPUS), _spec(), "auto", "distributor", local_mode=True)
    assert [{k: c[k] for k in ("num_processes", "local_mode", "use_gpu")} for c in distributor] == [
        {"num_processes": 2, "local_mode": True, "use_gpu": True}]
    assert distributor[0]["fn"] is fit.train
    assert distributor[0]["spec"].params.use_gpu is True       # the ranks take cuda:LOCAL_RANK
    assert (result["processes"], result["device"]) == (2, "cuda")


def test_no_gpu_resources_in_the_session_trains_on_the_cpu(distributor, gpus):
    # this machine: jobs/spark.py found no GPU, so the session has no driver GPU amount; auto -> 1 gloo process
    gpus(0)
    result = fit.launch(_session(), _spec(), "auto", "distributor")
    assert [(c["num_processes"], c["use_gpu"]) for c in distributor] == [(1, False)]
    assert distributor[0]["spec"].params.use_gpu is False
    assert (result["processes"], result["device"]) == (1, "cpu")


def test_gpus_visible_but_not_given_to_the_session_stay_unused(distributor, gpus):
    # training.gpu.enabled: false on a GPU machine: no resource settings, so the ranks must not take the GPUs
    gpus(2)
    fit.launch(_session(), _spec(), 3, "distributor")
    assert [(c["num_processes"], c["use_gpu"]) for c in distributor] == [(3, False)]   # CPU: as configured
    assert distributor[0]["spec"].params.use_gpu is False


def test_optim_use_gpu_false_keeps_the_cpu(distributor, gpus):
    gpus(2)
    fit.launch(_session(**LOCAL_2_GPUS), _spec(use_gpu=False), "auto", "distributor")
    assert [(c["num_processes"], c["use_gpu"]) for c in distributor] == [(1, False)]


def test_a_number_of_processes_is_capped_at_the_drivers_gpus(gpus):
    gpus(2)
    session = _session(**LOCAL_2_GPUS)
    assert fit.placement(session, 4, True) == fit.Placement(2, True)
    assert fit.placement(session, 1, True) == fit.Placement(1, True)
    gpus(1)                       # CUDA_VISIBLE_DEVICES hides one of the two the script found
    assert fit.placement(session, "auto", True) == fit.Placement(1, True)


def test_gpus_in_the_session_but_none_for_torch_is_an_error(gpus):
    gpus(0)                       # a CPU build of torch on a GPU machine
    with pytest.raises(ConfigError, match="torch sees none"):
        fit.placement(_session(**LOCAL_2_GPUS), "auto", True)


def test_cluster_auto_counts_the_executors_gpus(distributor, gpus):
    gpus(0)                       # the driver has none; the executors do
    session = _session(**{"spark.task.resource.gpu.amount": "1", "spark.executor.resource.gpu.amount": "2",
                          "spark.executor.instances": "3"})
    fit.launch(session, _spec(), "auto", "distributor", local_mode=False)
    assert [{k: c[k] for k in ("num_processes", "local_mode", "use_gpu")} for c in distributor] == [
        {"num_processes": 6, "local_mode": False, "use_gpu": True}]
    assert fit.placement(session, 4, True, local_mode=False) == fit.Placement(4, True)
    no_count = _session(**{"spark.task.resource.gpu.amount": "1"})
    with pytest.raises(ConfigError, match="spark.executor.instances"):
        fit.placement(no_count, "auto", True, local_mode=False)
    assert fit.placement(_session(), "auto", True, local_mode=False) == fit.Placement(1, False)


def test_inprocess_trains_here_on_the_sessions_device(distributor, gpus, monkeypatch):
    got = []
    monkeypatch.setattr(fit, "train", lambda spec: got.append(spec) or {"device": "cuda"})
    gpus(2)
    result = fit.launch(_session(**LOCAL_2_GPUS), _spec(), "auto", "inprocess")
    assert distributor == [] and got[0].params.use_gpu is True and result["processes"] == 1
    fit.launch(_session(), _spec(), "auto", "inprocess")
    assert got[1].params.use_gpu is False


# ------------------------------------------------------------------ the settings


def _training(environ=None, **training):
    return load_config(env="local", environ=environ or {}, overrides={"training": training}).training


def test_gpu_settings_default_to_auto_and_parse():
    t = _training()
    assert (t.processes, t.gpu.enabled, t.gpu.per_process, t.gpu.nccl_env) == ("auto", "auto", 1, {})
    assert t.gpu.discovery_script == "conf/gpu_discovery.sh"
    t = _training({"RECO__TRAINING__PROCESSES": "2", "RECO__TRAINING__GPU__ENABLED": "true"})
    assert (t.processes, t.gpu.enabled) == (2, True)
    assert _training(gpu={"enabled": False}).gpu.enabled is False
    assert _training(gpu={"nccl_env": {"NCCL_DEBUG": "INFO"}}).gpu.nccl_env == {"NCCL_DEBUG": "INFO"}


@pytest.mark.parametrize("training, says", [
    ({"processes": 0}, "processes"),
    ({"processes": "all"}, "processes"),
    ({"gpu": {"enabled": "maybe"}}, "enabled"),
    ({"gpu": {"per_process": 2}}, "one GPU per process"),
    ({"gpu": {"nccl_env": {"CUDA_VISIBLE_DEVICES": "0"}}}, "only NCCL_"),
    ({"gpu": {"enabled": True}, "optim": {"use_gpu": False}}, "optim.use_gpu is false"),
])
def test_gpu_setting_mistakes_are_refused(training, says):
    with pytest.raises(ConfigError, match=says):
        _training(**training)
