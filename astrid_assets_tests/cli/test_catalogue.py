"""``astrid export`` and ``astrid objects`` on a small catalogue written to the embedded database."""

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from astrid_assets.cli import main


@pytest.fixture
def catalogue(astrid_home):
    from astrid_assets import settings
    from astrid_assets.io.schema import forced_photometry, metadata, transient_objects
    from astrid_assets.io.tables import connect_with_retry, engine_for, write_rows

    url = settings.resolved_database_url(None)
    metadata.create_all(engine_for(url), tables=[transient_objects, forced_photometry])
    objects = pd.DataFrame({
        "night": ["2024-01-05", "2024-01-06", "2024-01-06", "2024-01-06"],
        "object_id": ["F01-a", "F01-a", "F01-b", "F01-nowcs"],
        "field": "F01", "ra": [150.0, 150.0, 150.01, np.nan], "dec": [2.0, 2.0, 2.0, np.nan],
        "x": [10.0, 10.0, 46.0, 5.0], "y": [10.0, 10.0, 10.0, 5.0], "first_mjd": 60314.1, "last_mjd": 60315.1,
        "first_night": "2024-01-05", "last_night": "2024-01-06", "n_detections": [3, 6, 2, 2],
        "real_probability": [0.9, 0.95, 0.2, 0.8], "model_version": "3", "moving": False,
    })
    photometry = pd.DataFrame({"night": "2024-01-06", "object_id": ["F01-a", "F01-a", "F01-b"], "frame_id": "f1",
                               "field": "F01", "mjd_obs": [60315.1, 60315.2, 60315.1], "flux": [900.0, 1000.0, 80.0],
                               "flux_err": 10.0, "mag": [18.0, 17.9, 20.7], "before_first_detection": False})
    with connect_with_retry(url) as connection, connection.begin():
        write_rows(connection, transient_objects, objects)
        write_rows(connection, forced_photometry, photometry)
    return astrid_home


@pytest.mark.parametrize("kind", ["votable", "csv", "fits"])
def test_export_opens_in_astropy_with_units(catalogue, tmp_path, kind, capsys):
    output = tmp_path / f"objects.{kind}"
    assert main(["export", "--start", "2024-01-01", "--end", "2024-01-10", "--format", kind,
                 "--output", str(output)]) == 0
    table = Table.read(output, format={"votable": "votable", "csv": "ascii.ecsv", "fits": "fits"}[kind])
    assert sorted(table["object_id"]) == ["F01-a", "F01-b", "F01-nowcs"]
    assert str(table["ra"].unit) == "deg" and str(table["first_mjd"].unit) == "d"
    assert str(table["peak_mag"].unit) == "mag" and str(table["x"].unit) == "pix"
    a = table[table["object_id"] == "F01-a"][0]
    assert a["n_detections"] == 6 and np.isclose(a["peak_mag"], 17.9)  # its latest row, its brightest epoch


def test_cone_search_returns_only_objects_inside_and_filters_combine(catalogue, tmp_path):
    output = tmp_path / "cone.xml"
    # F01-b is 36″ from F01-a: a 20″ cone around F01-a holds it alone; the object without a WCS is never inside
    assert main(["export", "--start", "2024-01-01", "--end", "2024-01-10", "--cone", "150.0", "2.0", "20",
                 "--output", str(output)]) == 0
    table = Table.read(output)
    assert list(table["object_id"]) == ["F01-a"] and table["distance_arcsec"][0] < 20
    assert main(["export", "--start", "2024-01-01", "--end", "2024-01-10", "--min-probability", "0.5",
                 "--brighter-than", "19", "--format", "csv", "--output", str(tmp_path / "bright.csv")]) == 0
    assert list(Table.read(tmp_path / "bright.csv", format="ascii.ecsv")["object_id"]) == ["F01-a"]


def test_objects_lists_and_inspects(catalogue, tmp_path, capsys):
    assert main(["objects", "--start", "2024-01-05", "--end", "2024-01-06", "--min-probability", "0.5"]) == 0
    listed = capsys.readouterr().out
    assert "F01-a" in listed and "F01-nowcs" in listed and "F01-b" not in listed
    assert main(["objects", "--object", "F01-zzz"]) == 2
