"""AstrID: find new and changing objects in the night sky, on Dagster."""

__version__ = "0.1.0"
