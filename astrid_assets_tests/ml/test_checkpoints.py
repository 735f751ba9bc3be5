"""Checkpoints kept in the object store between runs of a model version."""

from astrid_assets.io.object_store import open_object_store
from astrid_assets.ml.checkpoints import BEST, LAST, download_checkpoints, upload_checkpoints


def test_checkpoints_go_to_the_store_and_come_back(tmp_path):
    store = open_object_store(str(tmp_path / "store"))
    run, again = tmp_path / "run", tmp_path / "again"
    run.mkdir()
    again.mkdir()
    download_checkpoints(store, "unet_models/v1/checkpoints", again)  # nothing stored yet: nothing fetched
    assert list(again.iterdir()) == []
    for name in (LAST, BEST, "epoch_0005.pt"):
        (run / name).write_bytes(name.encode())
    (run / "training_curves.png").write_bytes(b"png")
    upload_checkpoints(store, "unet_models/v1/checkpoints", run)
    assert store.exists("unet_models/v1/checkpoints/epoch_0005.pt")
    assert not store.exists("unet_models/v1/checkpoints/training_curves.png")
    download_checkpoints(store, "unet_models/v1/checkpoints", again)
    assert sorted(p.name for p in again.iterdir()) == sorted([LAST, BEST])
    assert (again / LAST).read_bytes() == LAST.encode()
