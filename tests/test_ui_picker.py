"""The path pickers' listings (ui/browse.py), the charts' updates (ui/charts.py) and the run a page shows for its
output_dir (ui/monitor.py): the parts of issue 19's page that need no browser."""

from __future__ import annotations

import json

import pandas as pd

from trainer.config import TrainConfig, field_info
from ui import browse
from ui.charts import colored
from ui.fields import FIELD_SPECS
from ui.monitor import RunMonitor, latest_run


def test_every_path_field_has_a_picker_kind_from_the_schema():
    kinds = {name: spec.path for name, spec in FIELD_SPECS.items() if spec.path}
    assert kinds["train_data_dir"] == "folder" and kinds["output_dir"] == "folder"
    assert kinds["network_weights"] == "file" and kinds["pretrained_model_name_or_path"] == "any"
    assert all(field_info(name)["machine"] for name in kinds)  # a path is always a value of this computer
    assert set(kinds) <= set(TrainConfig.model_fields)


def test_listing_keeps_chinese_and_spaces_sorted_and_hides_dot_entries(tmp_path):
    (tmp_path / "10_角色 一").mkdir()
    (tmp_path / "2_Back ground").mkdir()
    (tmp_path / ".cache").mkdir()
    (tmp_path / "底模 v1.safetensors").write_bytes(b"")
    folders = browse.list_folder(str(tmp_path), files=False)
    assert folders.folders == ["10_角色 一", "2_Back ground"] and folders.files == []
    assert browse.list_folder(str(tmp_path), files=True).files == ["底模 v1.safetensors"]
    assert browse.start_folder(str(tmp_path / "10_角色 一" / "missing" / "x.txt")) == str(tmp_path / "10_角色 一")
    assert browse.start_folder("") == str(browse.Path.home())
    assert browse.parent(str(tmp_path / "10_角色 一")) == str(tmp_path)


def test_a_chart_is_cleared_instead_of_sent_empty_or_with_other_series():
    frame = pd.DataFrame({"step": [1, 2], "loss": [0.5, 0.4], "series": ["loss", "平滑后"]})
    update = colored(frame, "series")
    assert update["value"] is frame and set(update["color_map"]) == {"loss", "平滑后"}
    assert colored(frame.iloc[0:0], "series")["value"] is None  # Gradio would fix an empty colour scale
    assert colored(frame, "series", drawn=("loss", "smoothed"))["value"] is None  # renamed: drawn afresh next
    assert colored(frame, "series", drawn=("loss", "平滑后"))["value"] is frame


def test_a_page_sees_the_newest_run_of_its_own_output_dir(tmp_path):
    old = tmp_path / "old" / "runs" / "20260101-000000"
    old.mkdir(parents=True)
    (old / "events.jsonl").write_text(json.dumps({"type": "finished", "status": "completed"}) + "\n",
                                      encoding="utf-8")
    assert latest_run(tmp_path / "old") == old.resolve()
    monitor = RunMonitor()
    run_dir, state = monitor.view(tmp_path / "old")
    assert run_dir == old.resolve() and state.status == "completed"
    assert monitor.view(tmp_path / "新的 输出") == (None, None)
