"""The folder tree counts painted images (annotate's saved label maps) per folder."""

from __future__ import annotations

import numpy as np

from segdeck.core import imageio
from segdeck.tui.widgets.folder_tree import FolderTree, scan_folders


def test_painted_counts_follow_annotate_outputs(tmp_path):
    root = tmp_path / "photos"
    for name in ["a.png", "b.png", "sub dir/c.png"]:
        imageio.write_image(root / name, np.zeros((4, 4, 3), np.uint8))
    root = root.resolve()
    _, counts, painted, _files = scan_folders(root)
    assert counts[root] == 3 and painted == {}
    # annotate on the whole folder painted a.png and the nested c.png
    out = tmp_path / "photos.segdeck" / "annotate-slic"
    for flat in ["a.png", "sub dir__c.png"]:
        imageio.write_label_map(out / f"{flat}.labels.png", np.ones((4, 4), np.int32))
    # a session file alone is not a painting; neither is a label map of an unknown name
    imageio.write_text_atomic(out / "b.png.session.npz", "x")
    imageio.write_label_map(out / "gone.png.labels.png", np.ones((4, 4), np.int32))
    # annotate on the sub-folder painted c.png there too
    sub_out = root / "sub dir.segdeck" / "annotate-sam"
    imageio.write_label_map(sub_out / "c.png.labels.png", np.ones((4, 4), np.int32))
    children, counts, painted, _files = scan_folders(root)
    assert painted[root] == 2
    assert painted[root / "sub dir"] == 1
    assert root / "sub dir.segdeck" not in children[root]  # output folders are not listed
    tree = FolderTree(root)
    tree.counts, tree.painted = counts, painted
    assert "2 painted / 3 images" in tree._label(root, counts[root], root=True).plain
