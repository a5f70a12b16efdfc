"""Dataset: folder scan, aspect buckets and the step plan. Image loading (torch) lives in `images`, imported
on demand so the GUI can scan and plan without torch."""
from trainer.dataset.buckets import assign_bucket, make_buckets
from trainer.dataset.plan import Entry, FolderPlan, StepPlan, build_entries, epoch_batches, make_plan
from trainer.dataset.scan import IMAGE_EXTENSIONS, DatasetScan, ImageItem, Problem, Subset, scan_dataset

__all__ = [
    "IMAGE_EXTENSIONS", "DatasetScan", "Entry", "FolderPlan", "ImageItem", "Problem", "StepPlan", "Subset",
    "assign_bucket", "build_entries", "epoch_batches", "make_buckets", "make_plan", "scan_dataset",
]
