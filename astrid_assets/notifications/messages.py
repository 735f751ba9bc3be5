"""A notification rendered from an alert packet: subject, plain text and HTML (Jinja2 templates in
``templates/``), with the cut-out triplet and the light curve as PNG images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from astrid_assets.packets.cutouts import read_cutout
from astrid_assets.previews import triplet_grid
from astrid_assets.science.objects.plot import light_curve_png

__all__ = ["Notification", "render"]

TEMPLATES = Path(__file__).with_name("templates")
_environment = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                           autoescape=select_autoescape(["html"]), keep_trailing_newline=True)


@dataclass
class Notification:
    """What is sent for one (object, filter): rendered texts, images by content id, and a JSON summary."""

    key: str  #: the idempotency key of the (object, filter)
    filter_name: str
    night: str
    object_id: str
    candid: int
    subject: str
    text: str
    html: str
    images: dict[str, bytes] = field(default_factory=dict)  #: content id → PNG (``triplet``, ``lightcurve``)
    summary: dict = field(default_factory=dict)  #: the webhook's JSON body (less the images)


def light_curve_points(packet: dict) -> list[dict]:
    """The packet's forced photometry as ``jd``, ``flux``, ``error`` (e-) and ``detected``, in time order."""
    return [{"jd": p["jd"], "flux": p["forcediffimflux"], "error": p["forcediffimfluxunc"],
             "detected": bool(p.get("detected"))}
            for p in sorted(packet.get("fp_hists") or [], key=lambda p: p["jd"])
            if p.get("forcediffimflux") is not None and p.get("forcediffimfluxunc") is not None]


def triplet_png(packet: dict) -> bytes | None:
    """Science, reference and difference cut-outs side by side (None when a cut-out is missing)."""
    kinds = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
    if any(packet.get(kind) is None for kind in kinds):
        return None
    planes = []
    for kind in kinds:
        with read_cutout(packet[kind]["stampData"]) as hdus:
            planes.append(np.asarray(hdus[0].data, np.float32))
    return triplet_grid(np.stack(planes)[None], [packet["candidate"]["candidate_id"]])


def light_curve_image(packet: dict) -> bytes | None:
    """The forced-photometry light curve (flux in e- against MJD, 5σ upper limits), or None without one."""
    points = light_curve_points(packet)
    if not points:
        return None
    rows = pd.DataFrame({"mjd_obs": [p["jd"] - 2400000.5 for p in points], "flux": [p["flux"] for p in points],
                         "flux_err": [p["error"] for p in points],
                         "flux_limit_5sigma": [5 * p["error"] for p in points],
                         "detected": [p["detected"] for p in points]})
    first = packet["candidate"].get("jdstarthist")
    return light_curve_png([(rows, packet["objectId"], None if first is None else first - 2400000.5)])


def render(packet: dict, filter_name: str, night: str, key: str) -> Notification:
    """The notification of ``packet`` matched by the filter ``filter_name``."""
    candidate = packet["candidate"]
    images = {name: png for name, png in (("triplet", triplet_png(packet)), ("lightcurve", light_curve_image(packet)))
              if png is not None}
    values = {"packet": packet, "candidate": candidate, "context": packet.get("context"),
              "filter_name": filter_name, "night": night, "key": key, "images": images,
              "light_curve": light_curve_points(packet)}
    brightness = f"{candidate['magpsf']:.2f} mag" if candidate.get("magpsf") is not None else \
        f"S/N {candidate['snr']:.1f}"
    subject = f"AstrID {filter_name}: {packet['objectId']} at {brightness} ({night})"
    summary = {"idempotency_key": key, "filter": filter_name, "night": night, "objectId": packet["objectId"],
               "candid": packet["candid"], "schemavsn": packet["schemavsn"],
               "candidate": {k: candidate.get(k) for k in ("candidate_id", "jd", "fid", "filter", "ra", "dec",
                                                            "magpsf", "sigmapsf", "isdiffpos", "diffmaglim", "snr",
                                                            "rb", "rbversion", "ndethist", "ssnamenr", "neargaia")},
               "light_curve": values["light_curve"]}
    return Notification(key=key, filter_name=filter_name, night=night, object_id=packet["objectId"],
                        candid=packet["candid"], subject=subject,
                        text=_environment.get_template("notification.txt").render(values),
                        html=_environment.get_template("notification.html").render(values), images=images,
                        summary=summary)
