"""The HTTP lookup service over the published recommendations, plus a demo store front.

One module per job, imported downwards in this order:

* :mod:`serving.api.models`     request limits, the pydantic response models, the error body and texts
* :mod:`serving.api.metrics`    the Prometheus metrics (``prometheus_client``; multiprocess mode for workers)
* :mod:`serving.api.middleware` the ASGI middleware that counts every request, and the generic 500
* :mod:`serving.api.clients`    the lookup client as the routes call it (a blocking one on the thread pool)
* :mod:`serving.api.sampler`    a few customer ids of a version, for the demo page
* :mod:`serving.api.fast`       the lookups' fast path, ahead of FastAPI (and why it is kept)
* :mod:`serving.api.app`        ``create_app``: routes, exception handlers, lifespan
* :mod:`serving.api.main`       the command line, ``python -m serving.api --redis-url URL [--workers N]``
"""
