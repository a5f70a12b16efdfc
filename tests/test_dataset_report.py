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
    small = {"resolution": "96", "bucket_reso_steps": 16, "min_bucket_reso": 64, "max_bucket_reso": 128}
    return TrainConfig(train_data_dir=str(train), reg_data_dir=str(reg) if reg else None, max_train_epochs=1,
                       **{**small, **settings})


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
    assert plan is None and "没有找到训练图片" in dataset_report(scan, plan, "zh")  # the problem in the page's language


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


def test_bucket_limits_far_below_the_resolution_are_flagged(tmp_path):
    """The demo's max_bucket_reso 128 left at resolution 1024: every bucket that is not square stays at 128 px."""
    train, _ = dataset(tmp_path)
    scan, _, plan = scan_and_plan(config(train, resolution="1024"))
    (limit,) = [p for p in scan.problems if "max_bucket_reso" in p.reason]
    assert limit.path == train and limit.level == "warning" and "at least 1024" in limit.reason
    assert max(max(bucket) for bucket in plan.buckets if bucket[0] != bucket[1]) <= 128  # what it warns about
    assert "max_bucket_reso（128）小于训练分辨率" in dataset_report(scan, plan, "zh")
    square_only = scan_and_plan(config(train, resolution="512", min_bucket_reso=768, max_bucket_reso=1024))[0]
    assert any("only the square one" in p.reason or "but the square one" in p.reason for p in square_only.problems)
    fine = scan_and_plan(config(train))[0]  # the usual demo-sized settings: nothing to say
    assert not [p for p in fine.problems if "bucket_reso" in p.reason]


def test_a_repeat_folder_chosen_as_the_dataset_says_choose_its_parent_once(tmp_path):
    mine = tmp_path / "数据" / "10_mychar"
    for i in range(8):
        image(mine / f"{i}.png", (64, 64))
    scan, _, _ = scan_and_plan(config(mine))
    (problem,) = scan.problems
    assert problem.level == "error" and "choose its parent folder" in problem.reason
    assert str(mine.parent) in problem.reason
    assert "上一级文件夹" in problem.zh


def test_identical_warnings_are_one_row_with_a_count(tmp_path):
    train, _ = dataset(tmp_path)
    for i in range(5):
        (train / "10_cat" / f"stray{i}.doc").write_text("stray")
    report = dataset_report(scan_and_plan(config(train))[0], None, "en")
    rows = [line for line in report.splitlines() if "not an image" in line]
    assert len(rows) == 1 and "and 3 more (6 files)" in rows[0]
