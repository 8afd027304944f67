"""The measures a job may ask for, declared without their computation: each module holds one
measure's name, description and parameter model; `catalogue` lists them with their
capabilities. Torch-free, so the gateway validates a job's measures without the engine."""
