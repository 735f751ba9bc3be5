"""The functional core of AstrID: numpy / astropy / sep / photutils / torch, no Dagster.

Each function takes arrays and headers and returns arrays and tables.
"""
