"""The management API (FastAPI) under `/scalability/...`: the seed's routes and what sits beside them."""
