"""Which database of the suite's one Redis each part of the tests uses, in one place.

Parts that run real workers must not share a database with any other part: a worker takes
every message on its queues in its database, and a stack or fixture that lives for the whole
session (the SDK's, the studies') would take the jobs of a test that runs after it.
Database 0 is the `redis_url` fixture's (tests/conftest.py: worker tests, whose workers live
for one test); the fault test that restarts Redis runs a server of its own."""

STACK = 1  # tests/integration's shared stack
FAULTS_REAP = 2
FAULTS = 3
RETENTION = 4
SDK = 5
METRICS_PROCESSES = 6
REAPER = 7
TENANTS = 8  # tests/tenants: two user tenants, an ops and an admin key on one stack
API = 9
PREFORK = 10
STUDIES = 11
DEPLOY_RULES = 12
FLOWER = 13
DOCS = 14  # tests/docs: the stack the docs' console snippets run against
GATE = 15  # tests/gate: the stack the sharpness gate runs against
