"""Secrets never reach logs, reports or error messages: the redaction (core/redact.py) and every path
that prints a URL which may carry a password, each tried with a planted one. MLflow params:
tests/training/test_tracking_redaction.py."""
import logging

import pytest

from core.redact import RedactingFilter, env_secrets, redact_text, redact_url
from tests.conftest import free_port

PLANTED = "Pl4nted-s3cret"


@pytest.mark.parametrize("url, clean", [
    (f"redis://:{PLANTED}@127.0.0.1:6390/0", "redis://:***@127.0.0.1:6390/0"),
    (f"rediss://reco-reader:{PLANTED}@redis.internal:6379/2", "rediss://reco-reader:***@redis.internal:6379/2"),
    (f"http://key:{PLANTED}@[::1]:9000", "http://key:***@[::1]:9000"),
    (f"https://b.s3.example/o?X-Amz-Signature={PLANTED}&part=2", "https://b.s3.example/o?X-Amz-Signature=***&part=2"),
    ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),                      # nothing to hide
    ("https://mlflow.internal:5000/?page=2", "https://mlflow.internal:5000/?page=2"),
])
def test_redact_url_masks_the_password_and_secret_query_values(url, clean):
    assert redact_url(url) == clean


def test_redact_url_without_the_path_keeps_scheme_and_host_only():
    assert redact_url(f"https://u:{PLANTED}@hooks.slack.com/services/T0/B0/{PLANTED}", keep_path=False) == \
        "https://hooks.slack.com/..."


def test_redact_text_cleans_every_url_in_a_message_and_the_given_secrets():
    text = (f"cannot reach redis://:{PLANTED}@h:1/0 nor s3a://AKIA:{PLANTED}x@bucket/p (token={PLANTED}); "
            f"AUTH {PLANTED}")
    out = redact_text(text, [PLANTED])
    assert PLANTED not in out
    assert out.startswith("cannot reach redis://:***@h:1/0 nor s3a://AKIA:***@bucket/p")


def test_env_secrets_are_the_values_of_secret_variables_only():
    env = {"REDIS_PASSWORD": PLANTED, "AWS_SECRET_ACCESS_KEY": "aws-" + PLANTED, "RECO_API_KEY_LOOKUP": "new-key-1,old-key-2",
           "RECO_ENV": "prod", "REDIS_READER_PASSWORD": "ab"}   # too short to replace safely
    # longest first; the two keys of equal length in order of value, whatever the set's hash order
    assert env_secrets(env) == ["new-key-1,old-key-2", "aws-" + PLANTED, PLANTED, "new-key-1", "old-key-2"]


def test_a_log_record_is_written_redacted(caplog):
    caplog.handler.addFilter(RedactingFilter([PLANTED]))
    log = logging.getLogger("tests.redact")
    log.warning("publishing to %s with %s", f"redis://:{PLANTED}@h:1/0", PLANTED)
    try:
        raise ValueError(f"connect to https://u:{PLANTED}@mlflow.internal failed")
    except ValueError:
        log.exception("training failed")
    assert "publishing to redis://:***@h:1/0 with ***" in caplog.text
    assert PLANTED not in caplog.text and "mlflow.internal failed" in caplog.text


def test_redis_connection_errors_name_the_server_without_the_password():
    from serving.connection import RedisUnavailable, connect, ping_or_raise
    url = f"redis://reco:{PLANTED}@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as err:
        ping_or_raise(connect(url, retries=0, socket_timeout=0.5), url)
    with pytest.raises(ValueError) as bad:
        connect(f"http://u:{PLANTED}@h:1")
    assert PLANTED not in str(err.value) + str(bad.value) and "redis://reco:***@127.0.0.1" in str(err.value)


def test_the_cli_prints_errors_and_logs_redacted(monkeypatch, capsys, caplog):
    """reco publish --list against an unreachable Redis whose URL (from the environment) holds a password;
    then a log line through the handlers the CLI set up."""
    from orchestration.cli import main
    monkeypatch.setenv("RECO__REDIS__URL", f"redis://:{PLANTED}@127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("RECO__REDIS__EMBEDDED", "false")
    monkeypatch.setenv("REDIS_PASSWORD", PLANTED)
    assert main(["publish", "--list"]) != 0
    err = capsys.readouterr().err
    assert "cannot reach redis at redis://:***@127.0.0.1" in err and PLANTED not in err
    logging.getLogger("jobs.publish").warning("retrying with password %s", PLANTED)   # an env secret
    assert "retrying with password ***" in caplog.text and PLANTED not in caplog.text


def test_a_config_error_shows_its_input_redacted(monkeypatch, capsys):
    from orchestration.cli import main
    monkeypatch.setenv("RECO__REDIS__URL", f"redis://:{PLANTED}@127.0.0.1:6390/0")
    monkeypatch.setenv("RECO__REDIS__SSL_CA_CERTS", "/etc/reco/ca.pem")       # needs rediss://: refused
    assert main(["redis", "status"]) != 0
    err = capsys.readouterr().err
    assert "need a rediss:// url" in err and "redis://:***@127.0.0.1:6390/0" in err and PLANTED not in err


def test_an_undelivered_alert_logs_the_webhook_without_credentials_or_path(caplog):
    from core.alerts import Alert, send
    url = f"http://hook:{PLANTED}@127.0.0.1:{free_port()}/services/{PLANTED}"
    assert send(Alert("drift", "warning", "planted"), url=url, timeout_s=1) is False
    assert "http://127.0.0.1:" in caplog.text and PLANTED not in caplog.text


def test_an_s3_error_names_the_endpoint_without_its_credentials(monkeypatch, tmp_path):
    from jobs.storage import InputError, resolve_inputs
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(InputError) as err:
        resolve_inputs("s3://bucket/prefix/", str(tmp_path), endpoint_url=f"http://AKIA:{PLANTED}@127.0.0.1:{free_port()}",
                       region="us-east-1")
    assert "EndpointConnectionError" in str(err.value) and "AKIA:***@127.0.0.1" in str(err.value)
    assert PLANTED not in str(err.value)
