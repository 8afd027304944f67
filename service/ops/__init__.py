"""What ops teams watch: the queue, workers, health, readiness and Prometheus metrics."""
