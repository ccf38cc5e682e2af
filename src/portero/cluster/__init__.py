"""Several porteros as one, through Redis: a leader lease for the controllers, a shared registry (docs/redis.md)."""
