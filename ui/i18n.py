"""The page's own words in English and Chinese. Field help texts live in the schema; this is everything else.

`t(lang, key, **values)` formats one text. tests/test_ui_form.py checks both languages have the same keys and
every schema tab and group has a title.
"""

from __future__ import annotations

import locale
import os

from .tools_text import TOOLS_TEXT

LANGS = ("zh", "en")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Danlu 丹炉 · LoRA trainer",
        "tab_paths": "Paths", "tab_steps": "Steps", "tab_effect": "Model effect", "tab_presets": "Presets",
        "tab_run": "Run", "tab_tools": "Tools",
        "group_model": "Base model", "group_dataset": "Dataset", "group_output": "Output",
        "group_image": "Image size and buckets", "group_steps": "Epochs and batches", "group_saving": "Saving",
        "group_speed": "Speed and memory", "group_network": "Network", "group_learning_rate": "Learning rates",
        "group_optimizer": "Optimizer and scheduler", "group_noise": "Noise", "group_loss": "Loss",
        "group_text": "Text encoder", "group_caption": "Captions", "group_augmentation": "Augmentation",
        "group_samples": "Preview samples", "group_launch": "GPUs and processes", "group_flux": "Flux.1",
        "advanced": "Advanced", "tristate_default": "(family default)",
        "wording_tick": "tick {setting} ({where})", "wording_untick": "untick {setting} ({where})",
        "wording_set": "set {setting} to {value} ({where})",
        "start": "Start training", "stop": "Stop", "check": "Check config",
        "tensorboard": "Open TensorBoard", "demo": "Fill in the demo",
        "family_detected": "Detected: **{family}**", "family_unknown": "Base model: not recognised yet",
        "plan_title": "Step plan", "plan_missing": "The plan appears once the dataset folder is valid.",
        "lr_chart": "Learning rate over the planned steps", "lr_relative": "AdaFactor's relative step sets the "
        "learning rate from the gradients: there is no curve to draw before training.",
        "warnings_title": "Worth a second look", "problems_title": "Fix these first",
        "memory_title": "GPU memory (estimate)", "launch_title": "Processes and GPUs",
        "memory_warning": "⚠ The estimated peak GPU memory, {peak:.1f} GiB, is more than this GPU's {vram:.1f} GiB: "
        "the training may run out of memory. The step plan lists the changes that would make it fit.",
        "check_ok": "Config is valid: {steps} steps. Ready to start.",
        "preset_file": "Import: a Danlu preset (YAML/JSON), a kohya_ss GUI JSON, or an sd-scripts / lora-scripts TOML",
        "preset_save": "Save as my preset", "preset_saved": "Saved {path}.",
        "preset_name": "Preset name", "preset_download": "Preset file",
        "preset_list": "Presets (shipped and yours)", "preset_apply": "Apply", "preset_share": "Download to share",
        "preset_shipped": "shipped", "preset_user": "yours", "preset_none_chosen": "Choose a preset first.",
        "preset_applied": "Applied {name}: the defaults, then the preset; your own paths and output_name stay.",
        "preset_imported": "Imported {name} ({format}).",
        "preset_report": "{n} value(s) of the file changed, filled in with sd-scripts' defaults, or not imported:",
        "preset_report_changed": "- changed: `{key}` = `{value!r}` → `{setting}` = `{new!r}`: {reason}",
        "preset_report_default": "- left out of the file, so sd-scripts' default (as it would train): "
        "`{setting}` = `{new!r}`",
        "preset_report_unmapped": "- not imported: `{key}` = `{value!r}`: {reason}",
        "preset_report_path": "- not applied: `{setting}` = `{value!r}`: not found on this computer; the form keeps "
        "its own value (choose the right one there)",
        "preset_report_path_empty": "- not applied: `{setting}` is empty in the file; the form keeps its own value",
        "preset_no_change": "Nothing in the form changed.", "preset_changed": "{n} field(s) changed:",
        "demo_left": "Your own base model or dataset replaces the demo's, so the demo's own settings (96 px, "
        "buckets of at most 128 px, its previews, overwrite, ...) are back to their defaults; the ones you changed "
        "stay.",
        "preset_shared": "{path} is ready to share. Left out (this computer's paths): {keys}",
        "picker_folder": "Folder (or paste a path and press Enter)", "picker_use": "Use this folder",
        "picker_cancel": "Cancel", "picker_title_file": "**Choose a file for `{field}`**: click a 📁 to open it, a 📄 "
        "to pick it.", "picker_title_folder": "**Choose a folder for `{field}`**: click a 📁 to open it, then "
        "Use this folder.", "picker_title_any": "**Choose a file or folder for `{field}`**: click a 📄 to pick a "
        "file, or open a 📁 and Use this folder.", "picker_cut": "Only the first {n} entries are listed.",
        "line_demo": "▶ The demo is filled in and ready: press Start training (top right) to train a tiny LoRA, "
        "a few minutes on a CPU. Then put your own model and images in the Paths tab.",
        "line_idle": "No training in this output folder yet: press Start training when the form is ready.",
        "line_problems": "Fix the fields marked in red, then press Start training.",
        "line_running": "{status} · {percent}% · step {step} / {total} · ETA {eta} · details in the Run tab",
        "line_over": "Last run in this output folder ({run_dir}): {status}. Start training starts a new one.",
        "status_idle": "No training is running.", "status_starting": "Starting…", "status_running": "Training",
        "status_completed": "Completed", "status_stopped": "Stopped", "status_failed": "Failed",
        "status_pending": "Waiting", "status_skipped": "Skipped",
        "progress": "step {step} / {total} · epoch {epoch} / {epochs} · {speed} · ETA {eta}",
        "started": "Training started in {run_dir}.", "already_running": "A training is already running in "
        "{run_dir}. Stop it, or wait for it to finish, before starting another.",
        "stopped_clean": "Stopped. The LoRA was saved: {path}", "stopped_forced": "The training did not stop in "
        "time and was killed; the last saved epoch file is kept.",
        "nothing_to_stop": "No training is running.",
        "output_unwritable": "output_dir: '{path}' cannot be written ({reason}); choose a folder you can write to.",
        "log": "Log", "loss_chart": "Loss", "lr_run_chart": "Learning rate", "samples": "Preview samples",
        "checkpoints": "Saved files", "run_dir": "Run folder", "hint": "Hint",
        "tb_started": "TensorBoard runs at {url}", "tb_no_run": "Start a training first: TensorBoard shows a run's "
        "logs.", "tb_failed": "TensorBoard did not start: {reason}",
        "lang_label": "Language / 语言",
        "loss_raw": "loss", "loss_smoothed": "smoothed",
        "axis_step": "step", "axis_loss": "loss", "axis_lr": "learning rate", "axis_curve": "curve",
        "axis_group": "group", "axis_run": "run", "series_lr": "lr", "series_dlr": "d·lr",
        "epoch_label": "epoch {epoch}",
        "health_nan_loss": "The furnace exploded (NaN loss)", "health_loss_divergence": "Loss is rising",
        "health_loss_collapse": "Loss collapsed", "health_black_sample": "Black or blank preview",
        "health_noise_sample": "Noise preview", "health_forced_stop": "Stopped by force",
        "health_base_sample": "The base model's previews are broken", "banner_count": "({n} times)",
        "health_process_exit": "The training process ended", "health_error": "Error",
        "tab_compare": "Compare",
        "tab_dataset": "Dataset", "ds_intro": "Prepare the images and captions of the Paths tab's train_data_dir "
        "before training: tag or caption them (WD14 tagger, Florence-2, BLIP), edit one caption or all of them, and "
        "fix what the image checks find. Every change keeps the old captions (in .danlu-captions-backup): Undo puts "
        "back the last operation. The Paths tab's dataset check and the step plan follow.",
        "ds_folder": "Show folder", "ds_chosen": "Chosen images (empty: all) for tagging and bulk edits",
        "ds_refresh": "Read the folder again", "ds_gallery": "Images and their captions (click one to edit it)",
        "ds_pick_image": "Click a picture to edit its caption.", "ds_caption": "Caption",
        "ds_save": "Save caption", "ds_choose": "Add to chosen",
        "ds_saved": "Saved {file} (UTF-8).", "ds_all_folders": "All folders ({n} images)",
        "ds_gallery_capped": "\n\nThe gallery shows the first {n} pictures: choose a folder to see the others.",
        "ds_no_folder": "is empty: the Dataset tab works on the training folder",
        "ds_missing_folder": "'{folder}' is not a folder: choose the training folder on the Paths tab",
        "ds_not_trained": "– (no N_ repeat count: not trained)", "ds_no_images": "No images in `{folder}`.",
        "ds_col_folder": "folder", "ds_col_repeats": "repeats", "ds_col_images": "images",
        "ds_col_captions": "with a caption", "ds_col_tag": "tag", "ds_col_count": "count",
        "ds_col_file": "file", "ds_col_before": "before", "ds_col_after": "after",
        "ds_caption_unreadable": "the caption file cannot be read", "ds_no_caption": "(no caption)",
        "ds_frequency": "Tag frequency (the counts ss_tag_frequency records), per folder; click a tag to add it to "
        "the tags to remove",
        "ds_checks_clean": "Image checks: nothing found.",
        "ds_checks_count": "**Image checks**: {errors} errors, {warnings} warnings, {notes} notes",
        "ds_tagger": "Tag or caption the images", "ds_model": "Model: a Hugging Face repo id or a local folder",
        "ds_kind": "Kind (auto: from the model)", "ds_mode": "Images that have a caption",
        "ds_mode_info": "skip: leave them alone; append: add the new tags after the old ones; overwrite: replace "
        "them (the old ones are kept for Undo)",
        "ds_general": "General tag threshold (WD14)", "ds_character": "Character tag threshold (WD14)",
        "ds_max_tags": "At most this many tags (0: all)", "ds_first": "Always first, e.g. your trigger word",
        "ds_exclude": "Tags never written (comma-separated)", "ds_rating": "Add the rating tag",
        "ds_underscores": "Keep underscores (long_hair)", "ds_device": "Device", "ds_batch": "Batch size",
        "ds_captioner": "Florence-2 and BLIP", "ds_task": "Florence-2 task",
        "ds_max_length": "Longest caption (tokens)",
        "ds_beams": "Beams", "ds_prefix": "Text before each caption", "ds_suffix": "Text after each caption",
        "ds_start": "Start tagging", "ds_stop": "Stop",
        "ds_tag_busy": "Tagging is running already: stop it first.", "ds_tag_none": "No tagging is running.",
        "ds_tag_starting": "Starting the tagger…", "ds_tag_stopping": "Stopping after the current batch…",
        "ds_tag_progress": "{done}/{total} images",
        "ds_tag_loading": "Loading {model} (the first time it is downloaded into the Hugging Face cache; "
        "HF_ENDPOINT picks a mirror)…",
        "ds_tag_running": "Tagging with {model}; {skipped} images with a caption are left alone.",
        "ds_tag_done": "Done: {written} captions written, {skipped} kept, {failed} images unreadable. Undo puts "
        "back what was there.",
        "ds_tag_stopped": "Stopped: {written} captions written, {skipped} kept, {failed} images unreadable. Undo puts "
        "back what was there.",
        "ds_tag_refused": "The tagger did not start:",
        "ds_tag_died": "The tagger ended without finishing; its output is in {log}.",
        "ds_bulk": "Edit captions in bulk", "ds_edit_prefix": "Trigger word(s) to put first (added or moved)",
        "ds_edit_replace": "Find=replace, one a line (an empty replacement deletes)",
        "ds_edit_regex": "Find is a regular expression", "ds_edit_remove": "Tags to remove (comma-separated)",
        "ds_edit_min_count": "Remove tags found in fewer than N captions", "ds_edit_dedupe": "Remove repeated tags",
        "ds_edit_sort": "Sort tags A-Z", "ds_preview": "Preview", "ds_apply": "Apply", "ds_undo": "Undo last change",
        "ds_changes": "What changes", "ds_edit_nothing": "No edit chosen: fill in at least one of the fields above",
        "ds_preview_count": "{n} captions would change. Apply writes them.",
        "ds_applied": "{n} captions changed; Undo puts them back.",
        "ds_undone": "Undid {label}: {restored} captions restored, {removed} removed.",
        "tab_try": "Try", "try_intro": "Try LoRA files on their base model: every file at every strength, seed and "
        "prompt, laid out as an X/Y grid, with the base model's own picture as the control (strength 0). Under the "
        "grid: the effect size (how far each picture is from the base model's at the same seed and prompt, RMS "
        "pixel distance 0-1), the seed spread (how much one setting varies across seeds; the base's beside it) "
        "and broken pictures (black, flat, noise). Pick a run to fill in its base model, epoch files and preview "
        "prompts.",
        "try_run": "Run folder", "try_use_run": "Use this run", "try_base": "Base model (checkpoint or folder)",
        "try_files": "LoRA files, one a line (kohya, LyCORIS or diffusers layout)",
        "try_prompts": "Prompts, one a line (--n --w --h --s --l options allowed)",
        "try_strengths": "Strengths", "try_seeds": "Seeds", "try_rows": "Rows", "try_cols": "Columns",
        "try_sampler": "Sampler", "try_steps": "Steps (0: each prompt's)", "try_cfg": "CFG (0: each prompt's)",
        "try_width": "Width (0: each prompt's)", "try_height": "Height (0: each prompt's)",
        "try_start": "Render the grid", "try_stop": "Stop",
        "try_table": "Effects per file and strength", "try_chart": "Effect size against strength, per file",
        "try_axis_strength": "strength", "try_axis_effect": "effect size", "try_axis_file": "file",
        "try_col_file": "file", "try_col_strength": "strength", "try_col_effect": "effect size (mean)",
        "try_col_effect_min": "lowest", "try_col_effect_max": "highest", "try_col_seed_spread": "seed spread",
        "try_col_base_seed_spread": "base model's seed spread", "try_col_broken": "broken pictures",
        "try_png": "grid.png (settings in its PNG text and in grid.json)",
        "try_pick_run": "Choose a run folder first.",
        "try_started": "Rendering {n} cells into {folder}.", "try_none_running": "No grid is being rendered.",
        "try_stopping": "Stop requested: the grid ends after the current cell, with the cells done so far.",
        "try_loading": "Loading the base model… ({folder})",
        "try_progress": "{done} / {total} cells · {family} on {device}",
        "try_done": "{status}: {done} of {total} cells. Grid: `{grid}` · settings and effects: `{json}`",
        "try_failed": "The grid failed:", "try_died": "the process ended without finishing; see {log}",
        "sweep_intro": "Train variations of the form's config one after another, with the same preview prompts and "
        "seeds, then compare their previews side by side. One line per key: key=value1,value2 (several lines: every "
        "combination).",
        "sweep_vary": "Variations", "sweep_start": "Start the queue", "sweep_stop": "Stop the queue",
        "compare_prompt": "Preview prompt", "compare_loss": "Loss of each run (smoothed)",
        "sweep_empty": "Write at least one variation, e.g. network_dim=8,16.",
        "sweep_started": "Queue of {n} runs started: {folder}", "sweep_none_running": "No queue is running.",
        "sweep_ended": "The queue of {n} runs has ended ({status}): see the grid in the Compare tab. {folder}",
        "sweep_stopping": "Stop requested: the running training saves and ends; no further run starts.",
        "sweep_none": "No queue yet in this output folder.", "sweep_run": "Run", "sweep_status": "Status",
        "compare_empty": "No previews yet for this prompt.",
        "lrf_title": "Learning-rate finder",
        "lrf_intro": "A short run of your config with D-Adaptation or Prodigy at learning rate 1: they find the step "
        "size themselves. Where their d·lr curve levels off is a good unet_lr for AdamW (a third of it for Lion; "
        "text_encoder_lr a half to a tenth of it).",
        "lrf_probe": "Probe optimizer", "lrf_steps": "Steps (0: automatic)", "lrf_run": "Find the learning rate",
        "lrf_steps_info": "0 sizes it to this machine and your training: up to 300 steps (Prodigy 1000) on a GPU, "
        "100 (300) on a CPU, never more than the training itself; it ends sooner once the curve has levelled off.",
        "lrf_stop": "Stop", "lrf_bad_steps": "Steps must be a whole number: 0 (automatic) or more.",
        "lrf_running": "The probe is running in `{run_dir}`: Stop ends it cleanly and suggests from the curve so far.",
        "lrf_stopping": "The probe ends after its current step.",
        "lrf_settled": "It ended early at step {steps}: the curve had levelled off.",
        "lrf_stopped": "Stopped at step {steps}: the suggestion comes from the curve so far.",
        "lrf_capped": "⚠ For {target} the probe found {found}, but Danlu warns that {target} burns from {ceiling} "
        "with this network_alpha/network_dim: the suggestion stays below it ({rate}). D-Adaptation and Prodigy "
        "adapt their step size as they go; a fixed rate that high usually overshoots.",
        "lrf_curve": "d·lr per step", "lrf_target": "Train with", "lrf_apply": "Apply the suggestion",
        "lrf_failed": "The finder did not finish:\n\n{reason}",
        "lrf_report": "{probe}, {steps} steps: the curve levels off at **{plateau}**. Suggested: AdamW unet_lr "
        "{adamw}, Lion {lion}, text_encoder_lr between {low} and {high}.",
        "lrf_unsettled": "⚠ The curve was still rising at the end: this is a lower bound. Run it longer (more steps).",
        "lrf_nothing": "Run the finder first.", "lrf_applied": "Applied for {target}: {changed}",
        **TOOLS_TEXT["en"],
    },
    "zh": {
        "title": "丹炉 Danlu · LoRA 训练器",
        "tab_paths": "路径", "tab_steps": "步数", "tab_effect": "模型效果", "tab_presets": "预设",
        "tab_run": "运行", "tab_tools": "工具",
        "group_model": "底模", "group_dataset": "数据集", "group_output": "输出",
        "group_image": "图片尺寸与分桶", "group_steps": "轮数与批次", "group_saving": "保存",
        "group_speed": "速度与显存", "group_network": "网络", "group_learning_rate": "学习率",
        "group_optimizer": "优化器与调度器", "group_noise": "噪声", "group_loss": "损失",
        "group_text": "文本编码器", "group_caption": "标注（caption）", "group_augmentation": "数据增强",
        "group_samples": "预览图", "group_launch": "显卡与进程", "group_flux": "Flux.1",
        "advanced": "高级选项", "tristate_default": "（按模型默认）",
        "wording_tick": "勾选 {where} 里的 {setting}", "wording_untick": "取消勾选 {where} 里的 {setting}",
        "wording_set": "把 {where} 里的 {setting} 设为 {value}",
        "start": "开始训练", "stop": "停止", "check": "检查配置",
        "tensorboard": "打开 TensorBoard", "demo": "填入演示配置",
        "family_detected": "识别为：**{family}**", "family_unknown": "底模：尚未识别",
        "plan_title": "步数计划", "plan_missing": "数据集文件夹有效后，这里会显示步数计划。",
        "lr_chart": "计划步数内的学习率变化", "lr_relative": "AdaFactor 的相对步长根据梯度决定学习率，训练前无法画出曲线。",
        "warnings_title": "值得再看一眼", "problems_title": "请先修正",
        "memory_title": "显存（估计）", "launch_title": "进程与显卡",
        "memory_warning": "⚠ 估计显存峰值 {peak:.1f} GiB，超过这张显卡的 {vram:.1f} GiB：训练可能爆显存。"
        "步数计划下方列出了能让它放下的改动。",
        "check_ok": "配置有效：共 {steps} 步，可以开始训练。",
        "preset_file": "导入：丹炉预设（YAML/JSON）、kohya_ss 图形界面的 JSON，或 sd-scripts / 秋叶训练器的 TOML",
        "preset_save": "保存为我的预设", "preset_saved": "已保存 {path}。",
        "preset_name": "预设名称", "preset_download": "预设文件",
        "preset_list": "预设（内置的和你自己的）", "preset_apply": "应用", "preset_share": "下载分享版",
        "preset_shipped": "内置", "preset_user": "我的", "preset_none_chosen": "请先选择一个预设。",
        "preset_applied": "已应用 {name}：先恢复默认值，再套用预设；你自己的路径和 output_name 保持不变。",
        "preset_imported": "已导入 {name}（{format}）。",
        "preset_report": "文件中有 {n} 项被改动、按 sd-scripts 的默认值填入，或未导入：",
        "preset_report_changed": "- 已改动：`{key}` = `{value!r}` → `{setting}` = `{new!r}`：{reason}",
        "preset_report_default": "- 文件里没有写，按 sd-scripts 的默认值填入（与它训练时一致）：`{setting}` = `{new!r}`",
        "preset_report_unmapped": "- 未导入：`{key}` = `{value!r}`：{reason}",
        "preset_report_path": "- 未应用：`{setting}` = `{value!r}`：这台电脑上找不到它；表单保留原来的值"
        "（请在那里选好正确的路径）",
        "preset_report_path_empty": "- 未应用：文件里的 `{setting}` 是空的；表单保留原来的值",
        "preset_no_change": "表单没有任何变化。", "preset_changed": "改动了 {n} 项：",
        "demo_left": "你换上了自己的底模或数据集，所以演示专用的设置（96 分辨率、最大 128 的分桶、演示预览图、"
        "覆盖同名文件等）已恢复为默认值；你自己改过的设置保持不变。",
        "preset_shared": "{path} 可以分享了。已去掉本机路径：{keys}",
        "picker_folder": "文件夹（也可以粘贴路径后按回车）", "picker_use": "选择这个文件夹", "picker_cancel": "取消",
        "picker_title_file": "**为 `{field}` 选择文件**：点 📁 打开文件夹，点 📄 选中文件。",
        "picker_title_folder": "**为 `{field}` 选择文件夹**：点 📁 打开，然后点“选择这个文件夹”。",
        "picker_title_any": "**为 `{field}` 选择文件或文件夹**：点 📄 选中文件，或打开 📁 后点“选择这个文件夹”。",
        "picker_cut": "只列出了前 {n} 项。",
        "line_demo": "▶ 演示已填好，可以直接开始：点右上角的“开始训练”，几分钟（CPU）就能训练出一个很小的 LoRA。"
        "之后在“路径”页换成你自己的模型和图片。",
        "line_idle": "这个输出文件夹里还没有训练：表单准备好后点“开始训练”。",
        "line_problems": "请先改正标红的字段，再点“开始训练”。",
        "line_running": "{status} · {percent}% · 第 {step} / {total} 步 · 预计剩余 {eta} · 详情见“运行”页",
        "line_over": "这个输出文件夹的上一次训练（{run_dir}）：{status}。点“开始训练”会开始新的一次。",
        "status_idle": "当前没有训练在运行。", "status_starting": "正在启动…", "status_running": "训练中",
        "status_completed": "已完成", "status_stopped": "已停止", "status_failed": "失败",
        "status_pending": "排队中", "status_skipped": "已跳过",
        "progress": "第 {step} / {total} 步 · 第 {epoch} / {epochs} 轮 · {speed} · 预计剩余 {eta}",
        "started": "训练已在 {run_dir} 启动。", "already_running": "{run_dir} 中已有训练在运行。请先停止它或等它结束，再开始新的训练。",
        "stopped_clean": "已停止，LoRA 已保存：{path}", "stopped_forced": "训练没有按时停止，已被强制结束；之前保存的轮次文件仍然保留。",
        "nothing_to_stop": "当前没有训练在运行。",
        "output_unwritable": "output_dir（输出文件夹）'{path}' 无法写入（{reason}）；请换一个有写入权限的文件夹。",
        "log": "日志", "loss_chart": "损失（loss）", "lr_run_chart": "学习率", "samples": "预览图",
        "checkpoints": "已保存的文件", "run_dir": "运行文件夹", "hint": "建议",
        "tb_started": "TensorBoard 已在 {url} 运行", "tb_no_run": "请先开始一次训练：TensorBoard 显示的是某次运行的日志。",
        "tb_failed": "TensorBoard 没有启动：{reason}",
        "lang_label": "Language / 语言",
        "loss_raw": "原始 loss", "loss_smoothed": "平滑后",
        "axis_step": "步数", "axis_loss": "loss（损失）", "axis_lr": "学习率", "axis_curve": "曲线",
        "axis_group": "参数组", "axis_run": "训练", "series_lr": "学习率", "series_dlr": "d·lr（自适应步长）",
        "epoch_label": "第 {epoch} 轮",
        "health_nan_loss": "炸炉了（loss 变成 NaN）", "health_loss_divergence": "loss 在上升",
        "health_loss_collapse": "loss 塌缩", "health_black_sample": "预览图全黑或空白",
        "health_noise_sample": "预览图是噪点", "health_forced_stop": "已强制停止",
        "health_base_sample": "底模本身的预览图就有问题", "banner_count": "（共 {n} 次）",
        "health_process_exit": "训练进程已结束", "health_error": "错误",
        "tab_compare": "对比",
        "tab_dataset": "数据集", "ds_intro": "训练前整理 Paths 页 train_data_dir 里的图片和标注：自动打标或生成描述"
        "（WD14 标签器、Florence-2、BLIP），逐张或批量修改标注，并处理图片检查发现的问题。每次修改都会保留旧标注"
        "（在 .danlu-captions-backup 里）：“撤销”可恢复上一次操作。Paths 页的数据集检查和步数计划会随之更新。",
        "ds_folder": "显示文件夹", "ds_chosen": "选中的图片（留空为全部），用于打标和批量修改",
        "ds_refresh": "重新读取文件夹", "ds_gallery": "图片及其标注（点击一张即可编辑）",
        "ds_pick_image": "点击一张图片来编辑它的标注。", "ds_caption": "标注",
        "ds_save": "保存标注", "ds_choose": "加入选中",
        "ds_saved": "已保存 {file}（UTF-8）。", "ds_all_folders": "全部文件夹（{n} 张图片）",
        "ds_gallery_capped": "\n\n图库只显示前 {n} 张：选择一个文件夹查看其余图片。",
        "ds_no_folder": "为空：数据集页处理的是训练集文件夹",
        "ds_missing_folder": "'{folder}' 不是文件夹：请在 Paths 页选择训练集文件夹",
        "ds_not_trained": "–（没有 N_ 重复次数：不参与训练）", "ds_no_images": "`{folder}` 中没有图片。",
        "ds_col_folder": "文件夹", "ds_col_repeats": "重复次数", "ds_col_images": "图片数",
        "ds_col_captions": "有标注", "ds_col_tag": "标签", "ds_col_count": "次数",
        "ds_col_file": "文件", "ds_col_before": "修改前", "ds_col_after": "修改后",
        "ds_caption_unreadable": "标注文件无法读取", "ds_no_caption": "（无标注）",
        "ds_frequency": "标签频率（即 ss_tag_frequency 记录的次数），按文件夹；点击标签可加入“要删除的标签”",
        "ds_checks_clean": "图片检查：没有发现问题。",
        "ds_checks_count": "**图片检查**：{errors} 个错误，{warnings} 个警告，{notes} 条提示",
        "ds_tagger": "自动打标 / 生成描述", "ds_model": "模型：Hugging Face 仓库名或本地文件夹",
        "ds_kind": "类型（auto：按模型判断）", "ds_mode": "已有标注的图片",
        "ds_mode_info": "skip：跳过；append：把新标签加在旧标注后面；overwrite：替换（旧标注会保留，可撤销）",
        "ds_general": "通用标签阈值（WD14）", "ds_character": "角色标签阈值（WD14）",
        "ds_max_tags": "最多保留几个标签（0：全部）", "ds_first": "始终放在最前，例如触发词",
        "ds_exclude": "不写入的标签（逗号分隔）", "ds_rating": "加上分级标签",
        "ds_underscores": "保留下划线（long_hair）", "ds_device": "设备", "ds_batch": "批大小",
        "ds_captioner": "Florence-2 和 BLIP", "ds_task": "Florence-2 任务", "ds_max_length": "描述最长（token 数）",
        "ds_beams": "束搜索宽度", "ds_prefix": "每条描述前的文字", "ds_suffix": "每条描述后的文字",
        "ds_start": "开始打标", "ds_stop": "停止",
        "ds_tag_busy": "打标正在进行：请先停止。", "ds_tag_none": "没有正在进行的打标。",
        "ds_tag_starting": "正在启动打标…", "ds_tag_stopping": "当前这一批完成后停止…",
        "ds_tag_progress": "{done}/{total} 张图片",
        "ds_tag_loading": "正在加载 {model}（第一次会下载到 Hugging Face 缓存；可用 HF_ENDPOINT 指定镜像）…",
        "ds_tag_running": "正在用 {model} 打标；{skipped} 张已有标注的图片保持不变。",
        "ds_tag_done": "完成：写入 {written} 个标注，保留 {skipped} 个，{failed} 张图片无法读取。“撤销”可恢复原样。",
        "ds_tag_stopped": "已停止：写入 {written} 个标注，保留 {skipped} 个，{failed} 张图片无法读取。"
        "“撤销”可恢复原样。",
        "ds_tag_refused": "打标没有开始：",
        "ds_tag_died": "打标没有完成就结束了；输出在 {log}。",
        "ds_bulk": "批量修改标注", "ds_edit_prefix": "放在最前的触发词（添加或移到最前）",
        "ds_edit_replace": "查找=替换，每行一条（替换为空即删除）",
        "ds_edit_regex": "查找内容是正则表达式", "ds_edit_remove": "要删除的标签（逗号分隔）",
        "ds_edit_min_count": "删除出现在少于 N 个标注中的标签", "ds_edit_dedupe": "删除重复标签",
        "ds_edit_sort": "标签按字母排序", "ds_preview": "预览", "ds_apply": "应用", "ds_undo": "撤销上一次修改",
        "ds_changes": "将要修改的内容", "ds_edit_nothing": "没有选择任何修改：请至少填写上面的一项",
        "ds_preview_count": "将修改 {n} 个标注。点“应用”写入。",
        "ds_applied": "已修改 {n} 个标注；“撤销”可恢复。",
        "ds_undone": "已撤销 {label}：恢复 {restored} 个标注，删除 {removed} 个。",
        "tab_try": "试用", "try_intro": "在底模上试用 LoRA 文件：每个文件按每个强度、种子和提示词出图，排成 X/Y 网格，"
        "并以底模自己的图（强度 0）作对照。网格下方是效果大小（每张图与同种子、同提示词的底模图相差多少，"
        "像素均方根距离 0-1）、种子离散度（同一设置在不同种子间变化多大，旁边是底模的）以及坏图（全黑、纯色、噪点）。"
        "选一个训练文件夹即可填入它的底模、各轮文件和预览提示词。",
        "try_run": "训练文件夹", "try_use_run": "使用这次训练", "try_base": "底模（模型文件或文件夹）",
        "try_files": "LoRA 文件，每行一个（kohya、LyCORIS 或 diffusers 格式）",
        "try_prompts": "提示词，每行一个（可带 --n --w --h --s --l 选项）",
        "try_strengths": "强度", "try_seeds": "种子", "try_rows": "行", "try_cols": "列",
        "try_sampler": "采样器", "try_steps": "步数（0：用各提示词的）", "try_cfg": "CFG（0：用各提示词的）",
        "try_width": "宽（0：用各提示词的）", "try_height": "高（0：用各提示词的）",
        "try_start": "生成网格", "try_stop": "停止",
        "try_table": "各文件、各强度的效果", "try_chart": "效果大小随强度的变化（每个文件一条线）",
        "try_axis_strength": "强度", "try_axis_effect": "效果大小", "try_axis_file": "文件",
        "try_col_file": "文件", "try_col_strength": "强度", "try_col_effect": "效果大小（平均）",
        "try_col_effect_min": "最低", "try_col_effect_max": "最高", "try_col_seed_spread": "种子离散度",
        "try_col_base_seed_spread": "底模的种子离散度", "try_col_broken": "坏图",
        "try_png": "grid.png（设置写在 PNG 文本和 grid.json 里）",
        "try_pick_run": "请先选择训练文件夹。",
        "try_started": "正在生成 {n} 格，保存到 {folder}。", "try_none_running": "当前没有正在生成的网格。",
        "try_stopping": "已请求停止：当前这一格完成后结束，已完成的格子会保留。",
        "try_loading": "正在加载底模……（{folder}）",
        "try_progress": "{done} / {total} 格 · {family}，{device}",
        "try_done": "{status}：{done} / {total} 格。网格图：`{grid}` · 设置与效果：`{json}`",
        "try_failed": "网格生成失败：", "try_died": "进程未完成就结束了；请看 {log}",
        "sweep_intro": "把当前表单的配置按不同参数依次训练，预览提示词和种子完全相同，然后并排比较预览图。"
        "每行一个参数：参数名=值1,值2（写多行则训练所有组合）。",
        "sweep_vary": "参数变化", "sweep_start": "开始队列", "sweep_stop": "停止队列",
        "compare_prompt": "预览提示词", "compare_loss": "各次训练的 loss（平滑后）",
        "sweep_empty": "请至少写一行参数变化，例如 network_dim=8,16。",
        "sweep_started": "已开始 {n} 次训练的队列：{folder}", "sweep_none_running": "当前没有正在运行的队列。",
        "sweep_ended": "{n} 次训练的队列已结束（{status}）：在“对比”页查看网格。{folder}",
        "sweep_stopping": "已请求停止：正在进行的训练会先保存再结束，后面的训练不再开始。",
        "sweep_none": "这个输出文件夹里还没有队列。", "sweep_run": "训练", "sweep_status": "状态",
        "compare_empty": "这个提示词还没有预览图。",
        "lrf_title": "学习率探测",
        "lrf_intro": "用 D-Adaptation 或 Prodigy、学习率设为 1，把你的配置短跑一次：它们会自己找步长。d·lr 曲线走平处的数值，"
        "就是 AdamW 合适的 unet_lr（Lion 取三分之一；text_encoder_lr 取它的二分之一到十分之一）。",
        "lrf_probe": "探测用的优化器", "lrf_steps": "步数（0：自动）", "lrf_run": "开始探测学习率",
        "lrf_steps_info": "0 表示按本机和你的训练自动决定：有显卡时最多 300 步（Prodigy 1000 步），只有 CPU 时 100 步"
        "（300 步），且不超过训练本身的步数；曲线走平后会提前结束。",
        "lrf_stop": "停止", "lrf_bad_steps": "步数必须是整数：0（自动）或更大。",
        "lrf_running": "探测正在 `{run_dir}` 中运行：点“停止”会正常结束，并按已有的曲线给出建议。",
        "lrf_stopping": "探测将在当前这一步完成后结束。",
        "lrf_settled": "曲线已经走平，在第 {steps} 步提前结束。",
        "lrf_stopped": "已在第 {steps} 步停止：建议值来自目前为止的曲线。",
        "lrf_capped": "⚠ 对 {target}，探测得到 {found}，但按现在的 network_alpha/network_dim，丹炉认为 {target} 从 "
        "{ceiling} 起就容易炸炉：建议值取在它之下（{rate}）。D-Adaptation 和 Prodigy 会边训练边调整步长，"
        "固定用这么高的学习率通常会冲过头。",
        "lrf_curve": "每步的 d·lr", "lrf_target": "正式训练用", "lrf_apply": "应用建议值",
        "lrf_failed": "探测没有完成：\n\n{reason}",
        "lrf_report": "{probe}，{steps} 步：曲线在 **{plateau}** 处走平。建议：AdamW 的 unet_lr 取 {adamw}，Lion 取 {lion}，"
        "text_encoder_lr 取 {low} 到 {high} 之间。",
        "lrf_unsettled": "⚠ 曲线到最后仍在上升：这只是下限。请加大步数再探测一次。",
        "lrf_nothing": "请先运行探测。", "lrf_applied": "已按 {target} 应用：{changed}",
        **TOOLS_TEXT["zh"],
    },
}


def t(lang: str, key: str, **values: object) -> str:
    text = TEXT[lang if lang in TEXT else "en"][key]
    return text.format(**values) if values else text


def system_lang() -> str:
    """zh when the system locale is Chinese, else en (what --lang defaults to)."""
    names = [os.environ.get(var, "") for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE")]
    names.append(locale.getlocale()[0] or "")
    return "zh" if any(name.lower().startswith(("zh", "chinese")) for name in names if name) else "en"
