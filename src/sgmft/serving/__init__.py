"""Predict, explain and serve: the predictor, batch prediction, user profiles, the HTTP API."""
