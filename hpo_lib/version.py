"""The project's one version: the package metadata (pyproject.toml reads it), ``hpo --version``, the trial image's
tag in the rendered manifests and the pipeline's default image."""

__version__ = "0.1.0"
