"""The Redis ACL users of the two roles, as lines of an ACL file (``reco redis acl`` prints them).

Every key of a namespace starts with ``<namespace>:`` (serving/keys.py), so one key pattern,
``~<namespace>:*``, is all either user may touch:

* the **reader** (the lookup service) may only read: GET, MGET, HGET, HMGET, HGETALL, EXISTS
  (what serving/client.py sends), plus PING and SELECT. No write, no delete, no SCAN or KEYS,
  no FLUSH*, CONFIG, SHUTDOWN, DEBUG, MODULE or other admin command.
* the **publisher** (publish jobs, ``reco publish --rollback``) may read and write the
  namespace's keys with the commands serving/publish.py, loader.py, bulk_write.py, publish_lock.py,
  switch.py and cleanup.py send (MSETNX, HSET, LPUSH/LREM/LTRIM, SADD/SREM, UNLINK, the publish lock's SET/EVAL,
  MULTI/EXEC), and SCAN to find a version's keys. SCAN takes no key, so Redis cannot limit it to
  the pattern: the publisher can see the *names* of other keys, never read or change them.

The lookup service also *appends* to the feedback streams (impressions, the events intake: named by
``feedback.*.stream``, keyed ``<namespace>:stream:<name>`` as :meth:`serving.keys.KeySpace.stream`
keys them), and the feedback drain reads them as the publisher: a Redis 7 selector,
``(~<namespace>:stream:<name> ... +xadd)``, grants the reader XADD on those keys and nothing else (it
cannot read a stream, nor XADD into a key of the lists or another namespace's stream); the
publisher's selector grants the drain's consumer-group commands (XGROUP, XREADGROUP, XACK) on the
same keys.

With ``serving.auth.shared_limit`` on, the lookup service counts each API key's requests in Redis
(serving/api/rate_limit.py): a second selector of the reader, ``(~<namespace>:ratelimit:* +incrby
+pexpire)``, allows those two commands on those counters and nothing else (it stays unable to write
or expire a list). It is printed whether or not the limit is on, so turning it on needs no new ACL file.

Passwords are given as SHA-256 digests (``#<hex>``): the file never holds a password in clear.

Why a command and not a file under conf/: the rules depend on the namespace and user names of
the configuration in use, and the digests on passwords that exist only in the environment; a
printed file is always the one this configuration needs.
"""
from __future__ import annotations

import hashlib
import re
from typing import List, Sequence

from serving.keys import KeySpace, glob_escape

READER_COMMANDS = ("get", "mget", "hget", "hmget", "hgetall", "exists", "ping", "select", "echo")
PUBLISHER_COMMANDS = READER_COMMANDS + (
    "set", "mset", "msetnx", "del", "unlink", "hset", "lpush", "lrem", "ltrim", "lrange",
    "sadd", "srem", "smembers", "sismember", "pttl", "pexpire", "eval", "evalsha", "scan",
    "multi", "exec", "discard", "watch", "unwatch")
READER_STREAM_COMMANDS = ("xadd",)                        # the service logs impressions and events
PUBLISHER_STREAM_COMMANDS = ("xgroup", "xreadgroup", "xack")  # the feedback drain (jobs/feedback_drain.py)
READER_RATE_LIMIT_COMMANDS = ("incrby", "pexpire")  # shared rate limit counters (redis-py sends INCR as INCRBY)

_USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def password_digest(password: str) -> str:
    """``#<sha256 hex>``: how an ACL rule names a password without holding it."""
    if not password:
        raise ValueError("an ACL user's password must not be empty")
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def user_line(user: str, password: str, namespace: str, commands: tuple, streams: Sequence[str] = (),
              stream_commands: tuple = (), rate_limit_commands: tuple = ()) -> str:
    """One ``user ...`` line of an ACL file: on, the password's digest, the namespace's keys,
    no channels, no command but ``commands``; when stream names are given, a selector that allows
    ``stream_commands`` on those streams' keys in the namespace only; with ``rate_limit_commands``, a
    selector allowing them on the namespace's ``ratelimit:`` counters only."""
    if not _USER_RE.match(user):
        raise ValueError(f"redis ACL user name {user!r} is invalid: use 1-64 letters, digits, '_', '.' or '-'")
    ks = KeySpace(namespace)
    pattern = glob_escape(ks.namespace + ":") + "*"
    words = ["user", user, "reset", "on", password_digest(password), f"~{pattern}", "resetchannels",
             "-@all", *(f"+{c}" for c in commands)]
    if streams and stream_commands:
        words.append("(" + " ".join([*(f"~{glob_escape(ks.stream(s))}" for s in streams),
                                     *(f"+{c}" for c in stream_commands)]) + ")")
    if rate_limit_commands:
        words.append("(" + " ".join([f"~{glob_escape(ks.namespace + ':ratelimit:')}*",
                                     *(f"+{c}" for c in rate_limit_commands)]) + ")")
    return " ".join(words)


def acl_lines(namespace: str, reader_user: str, reader_password: str, publisher_user: str,
              publisher_password: str, streams: Sequence[str] = ()) -> List[str]:
    """The ACL file lines of the lookup service's reader and of the publisher (see the module);
    ``streams``: the names of the feedback streams (``feedback.*.stream``) the reader appends to and
    the publisher drains; their keys are in ``namespace``."""
    if reader_user == publisher_user:
        raise ValueError(f"the reader and the publisher must be two users, both are {reader_user!r}")
    return [user_line(reader_user, reader_password, namespace, READER_COMMANDS, streams, READER_STREAM_COMMANDS,
                      READER_RATE_LIMIT_COMMANDS),
            user_line(publisher_user, publisher_password, namespace, PUBLISHER_COMMANDS, streams,
                      PUBLISHER_STREAM_COMMANDS)]
