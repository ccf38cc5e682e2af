"""The monitor: collectors, metric series, alert rules, notifications and the Prometheus exposition."""
