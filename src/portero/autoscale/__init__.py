"""The autoscaler: a pure decision over per-replica signals, and the loop that feeds it."""
