"""Studies: ranking statistics, predictor, conformal intervals, the API and the SDK."""
