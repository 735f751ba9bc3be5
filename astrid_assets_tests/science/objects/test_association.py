"""Association of one night's detections with a field's objects: static, new, tracklets."""

import numpy as np
import pandas as pd

from astrid_assets.science.objects.association import AssociationRules, associate_night, find_tracklets, static_objects

T0 = 60315.0
MIN = 1 / 1440.0


def detections(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["candidate_id", "frame_id", "x", "y", "mjd_obs", "flux"])
    return frame.assign(sign=1, position_err_px=0.2)


def test_a_transient_seen_in_three_frames_joins_its_known_object_and_an_asteroid_is_a_tracklet():
    known = pd.DataFrame({"object_id": ["F-sn"], "x": [100.0], "y": [100.0], "position_err_px": [0.1]})
    rows = []
    for k in range(3):
        rows.append((f"s{k}-sn", f"s{k}", 100.0 + 0.3 * (-1) ** k, 100.2, T0 + 8 * k * MIN, 500.0))
        # 2 px/min along x: an asteroid
        rows.append((f"s{k}-ast", f"s{k}", 40.0 + 16.0 * k, 60.0 + 0.2 * k, T0 + 8 * k * MIN, 900.0))
    rows.append(("s1-new", "s1", 200.0, 30.0, T0 + 8 * MIN, 300.0))  # once, nowhere known: a new object
    rows.append(("s2-new", "s2", 200.5, 30.3, T0 + 16 * MIN, 300.0))  # … seen again in another frame
    out = associate_night(detections(rows), known, "F", "2024-01-05")
    by_id = out.set_index("candidate_id")
    assert (by_id.loc[["s0-sn", "s1-sn", "s2-sn"], "object_id"] == "F-sn").all()
    asteroid = by_id.loc[["s0-ast", "s1-ast", "s2-ast"]]
    assert asteroid.moving.all() and asteroid.object_id.nunique() == 1
    assert asteroid.object_id.iloc[0] != "F-sn" and "-m" in asteroid.object_id.iloc[0]
    assert by_id.loc["s1-new", "object_id"] == by_id.loc["s2-new", "object_id"]
    assert not by_id.loc[["s1-new", "s2-new"], "moving"].any()
    # stable ids: the same detections give the same objects
    assert associate_night(detections(rows), known, "F", "2024-01-05").object_id.tolist() == out.object_id.tolist()


def test_the_radius_stays_within_its_bounds():
    known = pd.DataFrame({"object_id": ["A"], "x": [50.0], "y": [50.0], "position_err_px": [0.05]})
    faint = detections([("a", "s0", 51.4, 50.0, T0, 100.0)]).assign(position_err_px=0.4)  # 4σ: 1.6 px
    near = associate_night(faint, known, "F", "2024-01-05")
    far = associate_night(faint.assign(x=51.7), known, "F", "2024-01-05")
    assert near.object_id[0] == "A"  # inside the 1.5 px maximum
    assert far.object_id[0] != "A"  # outside it, whatever the errors
    sharp = detections([("c", "s0", 51.2, 50.0, T0, 100.0)]).assign(position_err_px=0.01)
    assert associate_night(sharp, known, "F", "2024-01-05").object_id[0] != "A"  # beyond 4σ yet under 1.5 px
    assert associate_night(sharp, known, "F", "2024-01-05", AssociationRules(n_sigma=4, radius_min=1.3)
                           ).object_id[0] == "A"  # the minimum radius


def test_no_tracklet_from_a_static_pair_or_a_too_fast_pair():
    static = detections([("a", "s0", 10.0, 10.0, T0, 100.0), ("b", "s1", 10.5, 10.0, T0 + 8 * MIN, 100.0)])
    assert find_tracklets(static) == []
    fast = detections([("a", "s0", 10.0, 10.0, T0, 100.0), ("b", "s1", 400.0, 10.0, T0 + 8 * MIN, 100.0)])
    assert find_tracklets(fast) == []
    pair = detections([("a", "s0", 10.0, 10.0, T0, 100.0), ("b", "s1", 30.0, 10.0, T0 + 8 * MIN, 110.0)])
    assert find_tracklets(pair) == [[0, 1]]  # two frames only: a pair of like flux


def test_static_objects_average_their_detections_by_inverse_variance():
    rows = pd.DataFrame({"object_id": ["A", "A", "M"], "x": [10.0, 11.0, 50.0], "y": [5.0, 5.0, 5.0],
                         "position_err_px": [0.1, 0.2, 0.1], "moving": [False, False, True]})
    objects = static_objects(rows)
    assert list(objects.object_id) == ["A"]
    assert np.isclose(objects.x[0], (10 / 0.01 + 11 / 0.04) / (1 / 0.01 + 1 / 0.04))
    assert objects.position_err_px[0] < 0.1
