"""Resources of the API, one module each, each with a sync and an async class."""
