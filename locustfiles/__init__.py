"""Locust users, load shapes and the recorder plugin. Only this package imports locust."""
