"""Containers: records, lifecycle, logs, exec."""
