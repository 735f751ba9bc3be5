"""``astrid export`` and ``astrid objects``: the object catalogue, searched and written out.

``astrid export --start … --end … --format votable|csv|fits [--min-probability P] [--cone RA DEC R]
[--brighter-than MAG] [--output PATH]`` writes the objects detected in a window of nights as an astropy
Table with units on every column (CSV as ECSV: comma-separated with a header that carries the units).
``astrid objects --start … --end …`` lists them; ``astrid objects --object ID [--plot PNG]`` shows one
object's detections and light curve.
"""

import argparse
import sys

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from astropy.table import Table

FORMATS = {"votable": ("votable", ".xml"), "csv": ("ascii.ecsv", ".csv"), "fits": ("fits", ".fits")}
UNITS = {
    "ra": u.deg, "dec": u.deg, "x": u.pix, "y": u.pix, "position_err_px": u.pix, "first_mjd": u.day,
    "last_mjd": u.day, "n_detections": u.dimensionless_unscaled, "real_probability": u.dimensionless_unscaled,
    "peak_mag": u.mag, "peak_flux": u.ct,  # e- of the new frame (VOUnit has no electron)
    "distance_arcsec": u.arcsec,
}
TEXT = ("object_id", "field", "first_night", "last_night", "model_version")


def nights_between(start: str, end: str) -> list[str]:
    return [str(day.date()) for day in pd.date_range(start, end, freq="D")]


def objects_in_window(start: str, end: str, url: str | None = None) -> pd.DataFrame:
    """Each object detected between ``start`` and ``end`` (its latest row), with its peak forced flux and mag."""
    from astrid_assets.io.tables import read_nights

    nights = nights_between(start, end)
    objects = read_nights("transient_objects", nights, url)
    if objects.empty:
        return objects.assign(peak_mag=pd.Series(dtype=float), peak_flux=pd.Series(dtype=float))
    objects = objects.sort_values("night").groupby("object_id").last().reset_index()
    photometry = read_nights("forced_photometry", nights, url)
    peak = photometry.groupby("object_id").agg(peak_mag=("mag", "min"), peak_flux=("flux", "max")) \
        if len(photometry) else pd.DataFrame(columns=["peak_mag", "peak_flux"])
    return objects.merge(peak, left_on="object_id", right_index=True, how="left")


def search(objects: pd.DataFrame, min_probability: float | None = None, cone: tuple[float, float, float] | None = None,
           brighter_than: float | None = None) -> pd.DataFrame:
    """Objects passing the filters: real probability ≥ ``min_probability``; within ``cone`` (RA, Dec in deg,
    radius in arcsec; objects without a sky position are outside every cone); peak magnitude < ``brighter_than``."""
    keep = np.ones(len(objects), bool)
    if min_probability is not None:
        keep &= objects.real_probability.to_numpy(float) >= min_probability
    if brighter_than is not None:
        keep &= objects.peak_mag.to_numpy(float) < brighter_than
    out = objects[keep].copy()
    if cone is not None:
        ra, dec, radius = cone
        has_sky = out.ra.notna() & out.dec.notna()
        out = out[has_sky].copy()
        out["distance_arcsec"] = SkyCoord(out.ra.to_numpy(float), out.dec.to_numpy(float), unit="deg").separation(
            SkyCoord(ra, dec, unit="deg")).arcsec if len(out) else []
        out = out[out.distance_arcsec <= radius].sort_values("distance_arcsec")
    return out.reset_index(drop=True)


def to_table(objects: pd.DataFrame) -> Table:
    """An astropy Table of the catalogue columns, each numeric column with its unit."""
    table = Table()
    for name in [*TEXT, *UNITS]:
        if name not in objects:
            continue
        if name in TEXT:
            table[name] = np.array(objects[name].fillna("").astype(str).tolist(), dtype=str)
        else:
            table[name] = objects[name].to_numpy(float) * UNITS[name]
    table["moving"] = objects.moving.fillna(False).astype(bool).to_numpy()
    table.meta["description"] = "AstrID transient objects"
    return table


def add_parsers(commands) -> None:
    export_parser = commands.add_parser("export", help="write the objects of a window of nights (VOTable, CSV, FITS)")
    export_parser.add_argument("--start", required=True)
    export_parser.add_argument("--end", required=True)
    export_parser.add_argument("--format", choices=sorted(FORMATS), default="votable")
    export_parser.add_argument("--output", help="file to write (default: astrid-objects-START-END.EXT)")
    listing = commands.add_parser("objects", help="list the objects of a window of nights, or inspect one")
    listing.add_argument("--start")
    listing.add_argument("--end")
    listing.add_argument("--object", help="show this object's detections and light curve")
    listing.add_argument("--plot", help="with --object: write its light curve as a PNG here")
    for parser in (export_parser, listing):
        parser.add_argument("--min-probability", type=float, help="real probability at least this")
        parser.add_argument("--cone", type=float, nargs=3, metavar=("RA", "DEC", "RADIUS_ARCSEC"))
        parser.add_argument("--brighter-than", type=float, metavar="MAG", help="peak magnitude brighter than this")
    export_parser.set_defaults(handler=export)
    listing.set_defaults(handler=objects)


def export(args: argparse.Namespace) -> int:
    found = search(objects_in_window(args.start, args.end), args.min_probability, args.cone, args.brighter_than)
    file_format, suffix = FORMATS[args.format]
    output = args.output or f"astrid-objects-{args.start}-{args.end}{suffix}"
    table = to_table(found)
    table.write(output, format=file_format, overwrite=True, **({"delimiter": ","} if args.format == "csv" else {}))
    print(f"{len(table)} object(s) written to {output} ({args.format})")
    return 0


def objects(args: argparse.Namespace) -> int:
    from astrid_assets.io.tables import read_night_range

    if args.object:
        detections = read_night_range("object_detections", "0001-01-01", "9999-12-31", object_id=args.object)
        curve = read_night_range("forced_photometry", "0001-01-01", "9999-12-31", object_id=args.object)
        curve = curve.sort_values("mjd_obs").drop_duplicates(["frame_id"], keep="last")
        if detections.empty:
            print(f"astrid objects: no object {args.object}", file=sys.stderr)
            return 2
        print(detections.sort_values("mjd_obs")[["night", "candidate_id", "mjd_obs", "ra", "dec", "x", "y", "snr",
                                                 "real_probability", "model_version"]].to_string(index=False))
        print(curve[["mjd_obs", "flux", "flux_err", "snr", "mag", "maglim_5sigma", "before_first_detection"]]
              .to_string(index=False))
        if args.plot:
            from astrid_assets.science.objects.plot import light_curve_png

            with open(args.plot, "wb") as handle:
                handle.write(light_curve_png([(curve, args.object, float(detections.mjd_obs.min()))]))
            print(f"light curve written to {args.plot}")
        return 0
    if not (args.start and args.end):
        print("astrid objects: give --start and --end, or --object", file=sys.stderr)
        return 2
    found = search(objects_in_window(args.start, args.end), args.min_probability, args.cone, args.brighter_than)
    columns = [c for c in ("object_id", "field", "ra", "dec", "first_night", "n_detections", "real_probability",
                           "peak_mag", "moving") if c in found]
    print(found[columns].to_string(index=False) if len(found) else "no objects")
    return 0
