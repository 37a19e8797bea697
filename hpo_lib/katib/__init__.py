"""Katib: the cluster's side of the contract, with no local engine in it.

* :mod:`.space`: the search spaces, defined once, to Katib parameters and Optuna distributions;
* :mod:`.contract`: the StdOut metrics format, ``${trialParameters}`` substitution, Trial/Experiment conditions;
* :mod:`.experiment`: an Experiment read as Katib reads it: loading, its objectives, its trial command;
* :mod:`.settings`: each algorithm's ``algorithmSettings``: the accepted names, their parsers and rules, defaults;
* :mod:`.manifests`: the Experiments and cluster resources rendered from code, with a drift check;
* :mod:`.lint`: the offline checker that replays Katib's admission webhook and runtime failures (a package, one
  module per rule family);
* :mod:`.suggestion`: ``katib-hpo-multiobjective``'s proposals, for the engine and the suggestion service alike;
* :mod:`.service`: ``hpo katib suggestion-service``, Katib's ``Suggestion`` gRPC API over :mod:`.suggestion`;
* :mod:`.client`: Experiments and Trials on a live cluster through the Kubernetes API.
"""
