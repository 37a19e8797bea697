"""Results: what a finished tuning run means, from either source (Katib Trial CRs or the engine's study).

* :mod:`.winners`: top-k and the Pareto front over trials;
* :mod:`.tracking`: every MLflow write (study and trial runs, retrains, the model registry);
* :mod:`.render`: leaderboards, Katib-shaped exports, Markdown and HTML summaries;
* :mod:`.plots`: study plots as PNG and offline HTML.
"""
