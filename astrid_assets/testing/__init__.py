"""Test-data generators and helpers shared by tests and benchmarks."""
