"""core/pseudonym.py: the keyed hash is HMAC-SHA256 (RFC 4231's known answer), and the key comes from the
environment or the run stops with a message naming the variable, never the value."""
import pytest

from core.errors import ConfigError
from core.pseudonym import KEY_VARIABLE, pseudonym, pseudonym_key


def test_the_hash_is_hmac_sha256():
    # RFC 4231, test case 2
    assert pseudonym("what do ya want for nothing?", b"Jefe") == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_the_key_comes_from_the_environment():
    assert pseudonym_key({KEY_VARIABLE: "a" * 16}) == b"a" * 16


@pytest.mark.parametrize("environ, says", [({}, "is not set"), ({KEY_VARIABLE: "short-secret"}, "shorter than 16")])
def test_no_key_or_a_short_one_is_refused_without_echoing_it(environ, says):
    with pytest.raises(ConfigError, match=says) as err:
        pseudonym_key(environ, why="forget needs it")
    assert KEY_VARIABLE in str(err.value) and "forget needs it" in str(err.value)
    assert "short-secret" not in str(err.value)
