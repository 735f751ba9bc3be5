"""Schedules and sensors: the nightly run and the retraining loop."""
