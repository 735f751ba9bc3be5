"""A field without a WCS keeps its objects when its reference is rebuilt on another frame's grid."""

import numpy as np
import pandas as pd

from astrid_assets.science.objects.association import associate_night
from astrid_assets.science.objects.grid import grid_map


def rebuilt_grid(xy: np.ndarray, angle_deg: float = 0.15, shift=(6.3, -4.1)) -> np.ndarray:
    """Positions on a rebuilt reference's grid: its anchor frame pointed a few px off and rotated slightly."""
    angle = np.radians(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (xy - 256.0) @ rotation.T + 256.0 + np.asarray(shift)


def test_objects_keep_their_place_when_the_reference_is_rebuilt_without_a_wcs():
    rng = np.random.default_rng(3)
    stars = rng.uniform(20, 492, (60, 2))  # the first reference's stars: the stable grid
    rebuilt_stars = rebuilt_grid(stars) + rng.normal(0, 0.05, stars.shape)  # measured again on the new grid
    gmap = grid_map(rebuilt_stars, stars)
    assert gmap.n_stars >= 10

    transients = np.array([[120.0, 300.0], [400.5, 80.25]])  # objects found before the rebuild
    known = pd.DataFrame({"object_id": ["F-a", "F-b"], "x": transients[:, 0], "y": transients[:, 1],
                          "position_err_px": 0.1})
    seen = rebuilt_grid(transients) + rng.normal(0, 0.1, transients.shape)  # tonight, on the rebuilt grid
    x, y = gmap.to_stable(seen[:, 0], seen[:, 1])
    assert np.hypot(x - transients[:, 0], y - transients[:, 1]).max() < 0.5
    tonight = pd.DataFrame({"candidate_id": ["c1", "c2"], "frame_id": "s1", "x": x, "y": y, "mjd_obs": 60320.0,
                            "flux": 100.0, "sign": 1, "position_err_px": 0.2})
    assert associate_night(tonight, known, "F", "2024-01-09").object_id.tolist() == ["F-a", "F-b"]
    # the same detections left on the rebuilt grid's pixels would found new objects: the tie is what keeps them
    untied = tonight.assign(x=seen[:, 0], y=seen[:, 1])
    assert not associate_night(untied, known, "F", "2024-01-09").object_id.isin(known.object_id).any()
    # and forced photometry finds the objects back on the rebuilt grid
    back_x, back_y = gmap.from_stable(transients[:, 0], transients[:, 1])
    assert np.allclose(np.column_stack([back_x, back_y]), rebuilt_grid(transients), atol=0.2)
