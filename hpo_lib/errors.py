"""The project's exceptions: bad input a user can fix. `cli.py` prints them as one line and exits non-zero."""


class HpoError(Exception):
    """Base class: the message names the bad value and the rule it breaks."""


class DataError(HpoError):
    """A data source, ticker or series that cannot be used (unknown, empty, too short, NaNs)."""


class ConfigError(HpoError):
    """A flag, hyperparameter or manifest value outside what the project accepts."""


class TrainingError(HpoError):
    """Training could not produce a usable model (for example the loss became non-finite)."""
