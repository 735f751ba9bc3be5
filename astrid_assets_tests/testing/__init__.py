"""Tests of the independent test-data generators."""
