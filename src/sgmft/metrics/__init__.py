"""Scores of predictions against labels, with no model in sight: classification metrics,
calibration, conformal prediction sets and confidence intervals. Pure numpy/scikit-learn, so
every layer (training's cross-fitting, evaluation, serving) can use them."""
