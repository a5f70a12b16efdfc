"""ui/dataset_report.py and preflight.scan_and_plan: the Paths tab's dataset check, on real folders."""

import subprocess
import sys
from pathlib import Path

from PIL import Image

from trainer.checks.preflight import scan_and_plan
from trainer.config import TrainConfig
from ui.dataset_report import TEXT, dataset_report

REPO = Path(__file__).resolve().parent.parent


def image(path: Path, size: tuple[int, int], caption: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 60, 30)).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")


def dataset(root: Path) -> tuple[Path, Path]:
    """train: 10_cat (3 images, 2 captioned, one square) + a stray file; reg: 1_animal (2 landscape images)."""
    train, reg = root / "train", root / "reg"
    image(train / "10_cat" / "a.png", (96, 64), "cat, sitting")
    image(train / "10_cat" / "b.png", (96, 64), "cat, running")
    image(train / "10_cat" / "c.png", (64, 64))
    (train / "10_cat" / "notes.doc").write_text("stray")
    image(reg / "1_animal" / "r1.png", (96, 64))
    image(reg / "1_animal" / "r2.png", (96, 64))
    return train, reg


def config(train: Path, reg: Path | None = None, **settings) -> TrainConfig:
    return TrainConfig(train_data_dir=str(train), reg_data_dir=str(reg) if reg else None, resolution="96",
                       bucket_reso_steps=16, min_bucket_reso=64, max_bucket_reso=128, max_train_epochs=1,
                       **settings)


def rows(report: str, first_cell: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in report.splitlines()
            if line.startswith(f"| {first_cell} ")]


def test_folders_coverage_buckets_and_problems(tmp_path):
    train, reg = dataset(tmp_path)
    scan, entries, plan = scan_and_plan(config(train, reg))
    assert plan is not None and len(entries) == 30 + 30  # reg matched to the 30 training entries
    report = dataset_report(scan, plan, "en")
    assert rows(report, "10_cat") == [["10_cat", "training", "3", "10", "30", "2/3 (67%)"]]
    assert rows(report, "1_animal") == [["1_animal", "regularization", "2", "1", "2 (30 used)", "0/2 (0%)"]]
    buckets = report[report.index("### Buckets"):report.index("### Problems")]
    assert buckets.index("| 112×80 | 50 |") < buckets.index("| 96×96 | 10 |")  # largest first
    assert rows(report, "warning") == [["warning", "10_cat/notes.doc", scan.problems[0].reason]]


def test_chinese_labels(tmp_path):
    train, reg = dataset(tmp_path)
    scan, _, plan = scan_and_plan(config(train, reg))
    english, chinese = dataset_report(scan, plan, "en"), dataset_report(scan, plan, "zh")
    assert "### 文件夹" in chinese and "| 图片数 |" in chinese and "### 分桶" in chinese
    assert rows(chinese, "10_cat")[0][1] == "训练" and rows(chinese, "警告")
    assert set(TEXT["zh"]) == set(TEXT["en"]) and all(TEXT["zh"][k] != TEXT["en"][k] for k in TEXT["en"])
    assert chinese != english


def test_missing_or_empty_folder_says_so(tmp_path):
    scan, entries, plan = scan_and_plan(config(tmp_path / "nowhere"))
    assert plan is None and entries == []
    report = dataset_report(scan, plan, "en")
    assert report.startswith(TEXT["en"]["no_folders"]) and "| Folder |" not in report
    assert rows(report, "error")[0][1:] == [str(tmp_path / "nowhere"), "folder does not exist; check the path."]
    (tmp_path / "empty").mkdir()
    scan, _, plan = scan_and_plan(config(tmp_path / "empty"))
    assert plan is None and "no training images found" in dataset_report(scan, plan, "zh")


def test_errors_give_no_plan_but_still_the_folders(tmp_path):
    train, _ = dataset(tmp_path)
    scan, _, plan = scan_and_plan(config(train, tmp_path / "no_reg"))
    assert plan is None and scan.errors
    report = dataset_report(scan, None, "en")
    assert rows(report, "10_cat") and "### Buckets" not in report


def test_no_train_data_dir_and_no_torch():
    scan, entries, plan = scan_and_plan(TrainConfig(max_train_epochs=1))
    assert (scan.subsets, entries, plan) == ([], [], None)
    code = "import sys, trainer.checks.preflight, ui.dataset_report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
