"""What the harness, the Locust processes and the target agree on (filled in below)."""
