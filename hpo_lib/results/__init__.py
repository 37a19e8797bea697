"""Results: what a finished tuning run means, from either source (Katib Trial CRs or the engine's study).

* :mod:`.winners`: top-k and the Pareto front over trials;
* :mod:`.tracking`: every MLflow write of local studies (study and trial runs) and the writing helpers;
* :mod:`.retrain_tracking`: the pipeline's retrains in MLflow (the parent run, nested runs, the model registry);
* :mod:`.render`: leaderboards, Katib-shaped exports, Markdown and HTML summaries;
* :mod:`.pipeline_report`: the pipeline's report.md and report.html, with the champion's equity and forecasts;
* :mod:`.plots`: study plots as PNG and offline HTML.
"""
