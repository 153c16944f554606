"""The Redis ACL users of the two roles, as lines of an ACL file (``reco redis acl`` prints them).

Every key of a namespace starts with ``<namespace>:`` (serving/keys.py), so one key pattern,
``~<namespace>:*``, is all either user may touch:

* the **reader** (the lookup service) may only read: GET, MGET, HGET, HMGET, HGETALL, EXISTS
  (what serving/client.py sends), plus PING and SELECT. No write, no delete, no SCAN or KEYS,
  no FLUSH*, CONFIG, SHUTDOWN, DEBUG, MODULE or other admin command.
* the **publisher** (publish jobs, ``reco publish --rollback``) may read and write the
  namespace's keys with the commands serving/publish.py, loader.py and versions.py send (MSETNX,
  HSET, LPUSH/LREM/LTRIM, SADD/SREM, UNLINK, the publish lock's SET/EVAL, MULTI/EXEC), and SCAN
  to find a version's keys. SCAN takes no key, so Redis cannot limit it to the pattern: the
  publisher can see the *names* of other keys, never read or change them.

Passwords are given as SHA-256 digests (``#<hex>``): the file never holds a password in clear.

Why a command and not a file under conf/: the rules depend on the namespace and user names of
the configuration in use, and the digests on passwords that exist only in the environment; a
printed file is always the one this configuration needs.
"""
from __future__ import annotations

import hashlib
import re
from typing import List

from serving.keys import KeySpace, glob_escape

READER_COMMANDS = ("get", "mget", "hget", "hmget", "hgetall", "exists", "ping", "select", "echo")
PUBLISHER_COMMANDS = READER_COMMANDS + (
    "set", "mset", "msetnx", "del", "unlink", "hset", "lpush", "lrem", "ltrim", "lrange",
    "sadd", "srem", "smembers", "sismember", "pttl", "pexpire", "eval", "evalsha", "scan",
    "multi", "exec", "discard", "watch", "unwatch")

_USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def password_digest(password: str) -> str:
    """``#<sha256 hex>``: how an ACL rule names a password without holding it."""
    if not password:
        raise ValueError("an ACL user's password must not be empty")
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def user_line(user: str, password: str, namespace: str, commands: tuple) -> str:
    """One ``user ...`` line of an ACL file: on, the password's digest, the namespace's keys,
    no channels, no command but ``commands``."""
    if not _USER_RE.match(user):
        raise ValueError(f"redis ACL user name {user!r} is invalid: use 1-64 letters, digits, '_', '.' or '-'")
    pattern = glob_escape(KeySpace(namespace).namespace + ":") + "*"
    return " ".join(["user", user, "reset", "on", password_digest(password), f"~{pattern}", "resetchannels",
                     "-@all", *(f"+{c}" for c in commands)])


def acl_lines(namespace: str, reader_user: str, reader_password: str, publisher_user: str,
              publisher_password: str) -> List[str]:
    """The ACL file lines of the lookup service's reader and of the publisher (see the module)."""
    if reader_user == publisher_user:
        raise ValueError(f"the reader and the publisher must be two users, both are {reader_user!r}")
    return [user_line(reader_user, reader_password, namespace, READER_COMMANDS),
            user_line(publisher_user, publisher_password, namespace, PUBLISHER_COMMANDS)]
