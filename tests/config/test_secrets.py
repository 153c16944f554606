"""A password inside any URL in a YAML file is refused like any other secret (redis.url: test_config.py)."""
import shutil

import pytest

from config.loader import PROJECT_ROOT, load_config
from core.errors import ConfigError


@pytest.mark.parametrize("yaml_text, setting, variable", [
    ("\nmlflow:\n  tracking_uri: https://reco:hunter2@mlflow.internal:5000\n", "mlflow.tracking_uri",
     "RECO__MLFLOW__TRACKING_URI"),
    ("\ns3:\n  endpoint_url: http://AKIA:hunter2@minio.internal:9000\n", "s3.endpoint_url", "RECO__S3__ENDPOINT_URL"),
])
def test_a_password_inside_any_url_in_yaml_is_refused(tmp_path, yaml_text, setting, variable):
    conf = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", conf)
    (conf / "local.yaml").write_text((conf / "local.yaml").read_text() + yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(env="local", conf_dir=conf, environ={})
    msg = str(err.value)
    assert f"{setting} in {conf / 'local.yaml'} carries a password" in msg and variable in msg
    assert "hunter2" not in msg


def test_the_same_url_from_the_environment_is_accepted_and_errors_show_it_redacted():
    cfg = load_config(env="local", environ={"RECO__S3__ENDPOINT_URL": "http://AKIA:hunter2@minio.internal:9000"})
    assert cfg.s3.endpoint_url == "http://AKIA:hunter2@minio.internal:9000"
    with pytest.raises(ConfigError) as err:      # an invalid section shows its input without the password
        load_config(env="local", environ={"RECO__REDIS__URL": "redis://:hunter2@h:1/0",
                                          "RECO__REDIS__SSL_CERTFILE": "/c.pem"})
    assert "redis://:***@h:1/0" in str(err.value) and "hunter2" not in str(err.value)
