"""Objects: detections associated across frames and nights, on a field's stable pixel grid, and their
forced-photometry light curves."""

from astrid_assets.science.objects.association import associate_night, find_tracklets
from astrid_assets.science.objects.grid import GridMap, grid_map
from astrid_assets.science.objects.lightcurve import baseline_correct, to_magnitudes

__all__ = ["GridMap", "associate_night", "baseline_correct", "find_tracklets", "grid_map", "to_magnitudes"]
