"""The pipeline: its steps as plain functions over folders (KFP-free), the final retrain, and the KFP DAG that wires
them.

* :mod:`.steps`: the six steps: prepare data, tune, select winners, retrain, evaluate, register;
* :mod:`.settings`: ``PipelineSettings``, the pipeline's knobs and their one set of defaults (cluster and laptop
  presets);
* :mod:`.retrain`: a winner retrained on train + validation and its one look at the test split;
* :mod:`.summary`: what the evaluate step concludes: seeds per winner, the champion, the search-aware verdict;
* :mod:`.records`: what is recorded of a retrain: the prepared data set, MLflow params, tags and scalars;
* :mod:`.serving`: a retrain as an MLflow pyfunc that takes raw prices (features and scalers inside);
* :mod:`.progress`: how the steps report progress (a callback, or a file across kfp's processes);
* :mod:`.local`: the pipeline on kfp's local runner over ``hpo tune``'s export (``hpo pipeline run-local``);
* :mod:`.dag`: the KFP v2 pipeline (one lightweight component per step), compiled and run locally; the only
  module here that imports KFP.
"""
