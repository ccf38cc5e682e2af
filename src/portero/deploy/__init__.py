"""The deployer: moves a service from one revision to another by a strategy, gated by health and analysis,
and rolls back by itself."""
