"""The pipeline: its steps as plain functions over folders (KFP-free), and the KFP DAG that wires them.

* :mod:`.steps`: prepare data, tune, select winners, summarize, register;
* :mod:`.retrain`: a winner retrained on train + validation and its one look at the test split;
* :mod:`.dag`: the KFP v2 pipeline (one lightweight component per step), compiled and run locally; the only
  module here that imports KFP.
"""
