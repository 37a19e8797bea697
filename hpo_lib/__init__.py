"""katib-hpo: tune deep-learning forecasters for financial time series on Katib or on one machine."""

__version__ = "0.1.0"
