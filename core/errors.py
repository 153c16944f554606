"""The one error tree. Every error a user (or a caller of the lookup API) can act on is a
:class:`RecoError`; its message says what was wrong, where, and what to do. The CLI prints the message
(no stack trace) and exits with ``exit_code``; the lookup service answers ``http_status``.

Modules define narrower errors as subclasses (``serving.publish_lock.PublishError``,
``serving.connection.RedisUnavailable``, ``jobs.hourly_window.WindowError``...), so ``except RecoError`` is
the one place that turns any of them into an exit code or a response.
"""


class RecoError(Exception):
    """Base class: the message says what was wrong, where, and what to do."""
    exit_code = 2
    http_status = 500       # the lookup service's status for it (corrupt stored data, a server fault)


class ConfigError(RecoError, ValueError):
    """A configuration file, environment override or config value is invalid."""


class InputError(RecoError, ValueError):
    """An input location or file cannot be used (missing, unreadable, wrong credentials)."""


class InputSchemaError(RecoError):
    """A source's files do not have the columns its mapping expects."""


class EmptyInputError(RecoError):
    """A batch holds no data rows."""


class RunDateError(RecoError):
    """A run date is missing or invalid."""


class QualityGateError(RecoError):
    """Too large a share of a batch's rows failed validation."""
    exit_code = 3


class NotReadyError(RecoError):
    """A job's inputs are not there yet (lists not scored, a day not ingested): run it again once they are."""


class RulesError(RecoError, ValueError):
    """A rule file is invalid, or the rules cannot be met for a list."""


class StoredDataError(RecoError, ValueError):
    """Data read back from a store (Redis, a table) is not what this reader can use: corrupt, or written in
    a newer format. The store is at fault, not the caller (the lookup service answers 5xx)."""
    http_status = 500


class AlertRaised(RecoError):
    """A critical alert (``core/alerts.py``: a drift past its critical limit...) stops the task that raised it,
    and so the DAG's tasks downstream of it (publishing is held back)."""
    exit_code = 4


class ArtifactIntegrityError(RecoError):
    """A stored artifact (a registered model) is not what was recorded when it was registered: its files'
    checksum differs, or none was recorded. It is not loaded (a model file is a pickle: loading runs code)."""
