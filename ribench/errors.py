"""User-facing failures: the CLI prints their message on one line and exits non-zero."""


class RibenchError(Exception):
    """An error whose message is meant for the user, not a traceback."""

    exit_code = 2


class UnknownNameError(RibenchError):
    """A method, suite or pretrain name that is not registered."""


class ConfigError(RibenchError):
    """A bad --set key or value, or an inconsistent option."""


class StoreError(RibenchError):
    """The results store cannot be opened, read or written."""


class MissingWeightsError(RibenchError):
    """A pretrain's local weight file is absent."""


class WeightsError(RibenchError):
    """A weights file that exists but cannot be loaded: damaged, of another model, or holding pickled objects."""


class DataError(RibenchError):
    """Data on disk that does not match its manifest, or an image file that cannot be read."""
