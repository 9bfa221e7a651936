"""Statistics: pure functions of results and numbers (no processes, no files): step-time ratios with intervals
(``ratios``), step-time summaries (``summary``), quality and time-to-accuracy (``quality``), the CI gate's estimates
and verdicts (``gate``), change points over saved runs (``history``), parity's judgement (``parity``)."""
