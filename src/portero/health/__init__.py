"""Health checks: the rise/fall verdict (pure) and the HTTP prober that feeds it."""
