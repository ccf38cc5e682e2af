"""Runtimes run replicas. Only this package talks to processes, psutil or the Docker Engine."""
