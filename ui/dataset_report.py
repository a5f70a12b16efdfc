"""The dataset check the Paths tab shows: folders, caption coverage, buckets and problems, as Markdown.

Built from trainer.checks.preflight.scan_and_plan's results; no Gradio and no torch here. The problem reasons come from
trainer/dataset/scan.py and stay in English; the labels around them follow the GUI's language.
"""

from __future__ import annotations

from pathlib import Path

from trainer.dataset.plan import StepPlan
from trainer.dataset.scan import DatasetScan, Problem, Subset

SHOWN_FILES = 3  # of a problem many files share, the files named in its row

TEXT = {
    "en": {
        "folders": "Folders", "folder": "Folder", "role": "Role", "images": "Images", "repeats": "Repeats",
        "entries": "Images × repeats", "captions": "Captions", "train": "training", "reg": "regularization",
        "used": "{n} used", "buckets": "Buckets", "bucket": "Bucket (W×H)", "bucket_entries": "Entries",
        "problems": "Problems", "level": "Level", "file": "File", "reason": "Reason", "error": "error",
        "warning": "warning", "no_folders": "No dataset folders found. Put the images in sub-folders of "
        "train_data_dir named like 10_name (10 = repeats).", "no_problems": "No problems found.",
        "more_files": "{shown} and {n} more ({total} files)",
    },
    "zh": {
        "folders": "文件夹", "folder": "文件夹", "role": "用途", "images": "图片数", "repeats": "重复次数",
        "entries": "图片 × 重复", "captions": "标注文件", "train": "训练", "reg": "正则",
        "used": "实际用 {n}", "buckets": "分桶", "bucket": "分桶（宽×高）", "bucket_entries": "条目数",
        "problems": "问题", "level": "级别", "file": "文件", "reason": "原因", "error": "错误",
        "warning": "警告", "no_folders": "没有找到数据集文件夹。请把图片放进 train_data_dir 下名为 10_名称 的子文件夹"
        "（10 为重复次数）。", "no_problems": "没有发现问题。",
        "more_files": "{shown} 等（共 {total} 个文件）",
    },
}


def dataset_report(scan: DatasetScan, plan: StepPlan | None, lang: str) -> str:
    """Markdown: a table of the folders, the bucket distribution (when planned) and every problem found."""
    text = TEXT["zh" if lang.startswith("zh") else "en"]
    sections = [_folders(scan, plan, text) if scan.subsets else text["no_folders"]]
    if plan is not None and plan.buckets:
        sections.append(_buckets(plan, text))
    sections.append(_problems(scan, text, lang))
    return "\n\n".join(sections) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def _coverage(subset: Subset) -> str:
    images = len(subset.images)
    captioned = sum(item.has_caption_file for item in subset.images)
    return f"{captioned}/{images} ({100 * captioned / images:.0f}%)" if images else "0/0"


def _folders(scan: DatasetScan, plan: StepPlan | None, text: dict[str, str]) -> str:
    used = {folder.path: folder.used for folder in plan.folders} if plan else {}
    rows = []
    for subset in scan.subsets:
        entries = str(len(subset.images) * subset.repeats)
        if used.get(subset.path) is not None:  # regularization folders are matched to the training count
            entries += " (" + text["used"].format(n=used[subset.path]) + ")"
        rows.append([subset.path.name, text["reg" if subset.is_reg else "train"], str(len(subset.images)),
                     str(subset.repeats), entries, _coverage(subset)])
    header = [text[key] for key in ("folder", "role", "images", "repeats", "entries", "captions")]
    return f"### {text['folders']}\n\n" + _table(header, rows)


def _buckets(plan: StepPlan, text: dict[str, str]) -> str:
    ranked = sorted(plan.buckets.items(), key=lambda item: (-item[1], item[0]))
    rows = [[f"{width}×{height}", str(count)] for (width, height), count in ranked]
    return f"### {text['buckets']}\n\n" + _table([text["bucket"], text["bucket_entries"]], rows)


def _problems(scan: DatasetScan, text: dict[str, str], lang: str) -> str:
    if not scan.problems:
        return f"### {text['problems']}\n\n{text['no_problems']}"
    roots = {subset.path.parent for subset in scan.subsets}
    groups: dict[tuple[str, str], list[Problem]] = {}  # the same warning for many files: one row, counted
    for problem in scan.problems:
        groups.setdefault((problem.level, problem.reason), []).append(problem)
    rows = [[text[level], _shown_paths(group, roots, text), group[0].reason_in(lang)]
            for (level, _), group in groups.items()]
    return f"### {text['problems']}\n\n" + _table([text["level"], text["file"], text["reason"]], rows)


def _shown_paths(group: list[Problem], roots: set[Path], text: dict[str, str]) -> str:
    """The files of a group of identical problems: the first SHOWN_FILES, then how many more."""
    shown = ", ".join(_shown_path(problem, roots) for problem in group[:SHOWN_FILES])
    if len(group) <= SHOWN_FILES:
        return shown
    return text["more_files"].format(shown=shown, n=len(group) - SHOWN_FILES, total=len(group))


def _shown_path(problem: Problem, roots: set[Path]) -> str:
    """Relative to the dataset root it lies in (train_data_dir or reg_data_dir), else the full path."""
    for root in roots:
        if problem.path != root and problem.path.is_relative_to(root):
            return problem.path.relative_to(root).as_posix()
    return str(problem.path)
