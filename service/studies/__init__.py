"""Studies over HTTP: a sweep of related jobs whose gaps calibrate the measures.

    router.py   /v1/studies: create, read, list, delete, plot
    schemas.py  request and response models
    store.py    study records in Redis
    service.py  evaluation of a stored study (cached) and the predictions shown on jobs

The statistics themselves are the torch-free library tasks/studies (see docs/science.md for
why a prediction is only made inside a study); this package stores studies, runs the
analysis off the event loop and validates its dataclasses into the response models.
"""
