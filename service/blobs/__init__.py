"""Uploaded files: models and datasets (upload, read, delete), their format checks and the
references a spec makes to them."""
