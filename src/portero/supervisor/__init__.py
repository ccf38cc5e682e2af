"""The supervisor: keeps every service at its desired count of healthy replicas."""
