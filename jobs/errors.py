"""Errors a user can act on. The CLI prints their message (no stack trace) and exits non-zero."""


class RecoError(Exception):
    """Base class: the message says what was wrong, where, and what to do."""
    exit_code = 2


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
