"""The pipeline's steps as plain functions over folders; KFP-free (``pipelines/katib_hpo.py`` wires them).

* :mod:`.steps`: prepare data, tune, select winners, summarize, register;
* :mod:`.retrain`: a winner retrained on train + validation and its one look at the test split.
"""
