"""The router: portero's own HTTP load balancer (data plane)."""
