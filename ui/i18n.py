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
        "preset_applied": "Applied {name}: the defaults, then the preset, then your own paths.",
        "preset_imported": "Imported {name} ({format}).",
        "preset_report": "{n} value(s) of the file changed, filled in with sd-scripts' defaults, or not imported:",
        "preset_report_changed": "- changed: `{key}` = `{value!r}` → `{setting}` = `{new!r}`: {reason}",
        "preset_report_default": "- left out of the file, so sd-scripts' default (as it would train): "
        "`{setting}` = `{new!r}`",
        "preset_report_unmapped": "- not imported: `{key}` = `{value!r}`: {reason}",
        "preset_no_change": "Nothing in the form changed.", "preset_changed": "{n} field(s) changed:",
        "preset_shared": "{path} is ready to share. Left out (this computer's paths): {keys}",
        "status_idle": "No training is running.", "status_starting": "Starting…", "status_running": "Training",
        "status_completed": "Completed", "status_stopped": "Stopped", "status_failed": "Failed",
        "progress": "step {step} / {total} · epoch {epoch} / {epochs} · {speed} · ETA {eta}",
        "started": "Training started in {run_dir}.", "already_running": "A training is already running in "
        "{run_dir}. Stop it, or wait for it to finish, before starting another.",
        "stopped_clean": "Stopped. The LoRA was saved: {path}", "stopped_forced": "The training did not stop in "
        "time and was killed; the last saved epoch file is kept.",
        "nothing_to_stop": "No training is running.",
        "log": "Log", "loss_chart": "Loss", "lr_run_chart": "Learning rate", "samples": "Preview samples",
        "checkpoints": "Saved files", "run_dir": "Run folder", "hint": "Hint",
        "tb_started": "TensorBoard runs at {url}", "tb_no_run": "Start a training first: TensorBoard shows a run's "
        "logs.", "tb_failed": "TensorBoard did not start: {reason}",
        "lang_label": "Language / 语言",
        "loss_raw": "loss", "loss_smoothed": "smoothed",
        "epoch_label": "epoch {epoch}",
        "health_nan_loss": "The furnace exploded (NaN loss)", "health_loss_divergence": "Loss is rising",
        "health_loss_collapse": "Loss collapsed", "health_black_sample": "Black or blank preview",
        "health_noise_sample": "Noise preview", "health_forced_stop": "Stopped by force",
        "health_process_exit": "The training process ended", "health_error": "Error",
        "tab_compare": "Compare",
        "sweep_intro": "Train variations of the form's config one after another, with the same preview prompts and "
        "seeds, then compare their previews side by side. One line per key: key=value1,value2 (several lines: every "
        "combination).",
        "sweep_vary": "Variations", "sweep_start": "Start the queue", "sweep_stop": "Stop the queue",
        "compare_prompt": "Preview prompt", "compare_loss": "Loss of each run (smoothed)",
        "sweep_empty": "Write at least one variation, e.g. network_dim=8,16.",
        "sweep_started": "Queue of {n} runs started: {folder}", "sweep_none_running": "No queue is running.",
        "sweep_stopping": "Stop requested: the running training saves and ends; no further run starts.",
        "sweep_none": "No queue yet in this output folder.", "sweep_run": "Run", "sweep_status": "Status",
        "compare_empty": "No previews yet for this prompt.",
        "lrf_title": "Learning-rate finder",
        "lrf_intro": "A short run of your config with D-Adaptation or Prodigy at learning rate 1: they find the step "
        "size themselves. Where their d·lr curve levels off is a good unet_lr for AdamW (a third of it for Lion; "
        "text_encoder_lr a half to a tenth of it).",
        "lrf_probe": "Probe optimizer", "lrf_steps": "Steps (empty: automatic)", "lrf_run": "Find the learning rate",
        "lrf_curve": "d·lr per step", "lrf_target": "Train with", "lrf_apply": "Apply the suggestion",
        "lrf_failed": "The finder did not finish:\n\n{reason}",
        "lrf_report": "{probe}, {steps} steps: the curve levels off at **{plateau}**. Suggested: AdamW unet_lr "
        "{plateau}, Lion {lion}, text_encoder_lr between {low} and {high}.",
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
        "preset_applied": "已应用 {name}：先恢复默认值，再套用预设，最后保留你自己的路径。",
        "preset_imported": "已导入 {name}（{format}）。",
        "preset_report": "文件中有 {n} 项被改动、按 sd-scripts 的默认值填入，或未导入：",
        "preset_report_changed": "- 已改动：`{key}` = `{value!r}` → `{setting}` = `{new!r}`：{reason}",
        "preset_report_default": "- 文件里没有写，按 sd-scripts 的默认值填入（与它训练时一致）：`{setting}` = `{new!r}`",
        "preset_report_unmapped": "- 未导入：`{key}` = `{value!r}`：{reason}",
        "preset_no_change": "表单没有任何变化。", "preset_changed": "改动了 {n} 项：",
        "preset_shared": "{path} 可以分享了。已去掉本机路径：{keys}",
        "status_idle": "当前没有训练在运行。", "status_starting": "正在启动…", "status_running": "训练中",
        "status_completed": "已完成", "status_stopped": "已停止", "status_failed": "失败",
        "progress": "第 {step} / {total} 步 · 第 {epoch} / {epochs} 轮 · {speed} · 预计剩余 {eta}",
        "started": "训练已在 {run_dir} 启动。", "already_running": "{run_dir} 中已有训练在运行。请先停止它或等它结束，再开始新的训练。",
        "stopped_clean": "已停止，LoRA 已保存：{path}", "stopped_forced": "训练没有按时停止，已被强制结束；之前保存的轮次文件仍然保留。",
        "nothing_to_stop": "当前没有训练在运行。",
        "log": "日志", "loss_chart": "损失（loss）", "lr_run_chart": "学习率", "samples": "预览图",
        "checkpoints": "已保存的文件", "run_dir": "运行文件夹", "hint": "建议",
        "tb_started": "TensorBoard 已在 {url} 运行", "tb_no_run": "请先开始一次训练：TensorBoard 显示的是某次运行的日志。",
        "tb_failed": "TensorBoard 没有启动：{reason}",
        "lang_label": "Language / 语言",
        "loss_raw": "loss", "loss_smoothed": "平滑后",
        "epoch_label": "第 {epoch} 轮",
        "health_nan_loss": "炸炉了（loss 变成 NaN）", "health_loss_divergence": "loss 在上升",
        "health_loss_collapse": "loss 塌缩", "health_black_sample": "预览图全黑或空白",
        "health_noise_sample": "预览图是噪点", "health_forced_stop": "已强制停止",
        "health_process_exit": "训练进程已结束", "health_error": "错误",
        "tab_compare": "对比",
        "sweep_intro": "把当前表单的配置按不同参数依次训练，预览提示词和种子完全相同，然后并排比较预览图。"
        "每行一个参数：参数名=值1,值2（写多行则训练所有组合）。",
        "sweep_vary": "参数变化", "sweep_start": "开始队列", "sweep_stop": "停止队列",
        "compare_prompt": "预览提示词", "compare_loss": "各次训练的 loss（平滑后）",
        "sweep_empty": "请至少写一行参数变化，例如 network_dim=8,16。",
        "sweep_started": "已开始 {n} 次训练的队列：{folder}", "sweep_none_running": "当前没有正在运行的队列。",
        "sweep_stopping": "已请求停止：正在进行的训练会先保存再结束，后面的训练不再开始。",
        "sweep_none": "这个输出文件夹里还没有队列。", "sweep_run": "训练", "sweep_status": "状态",
        "compare_empty": "这个提示词还没有预览图。",
        "lrf_title": "学习率探测",
        "lrf_intro": "用 D-Adaptation 或 Prodigy、学习率设为 1，把你的配置短跑一次：它们会自己找步长。d·lr 曲线走平处的数值，"
        "就是 AdamW 合适的 unet_lr（Lion 取三分之一；text_encoder_lr 取它的二分之一到十分之一）。",
        "lrf_probe": "探测用的优化器", "lrf_steps": "步数（留空：自动）", "lrf_run": "开始探测学习率",
        "lrf_curve": "每步的 d·lr", "lrf_target": "正式训练用", "lrf_apply": "应用建议值",
        "lrf_failed": "探测没有完成：\n\n{reason}",
        "lrf_report": "{probe}，{steps} 步：曲线在 **{plateau}** 处走平。建议：AdamW 的 unet_lr 取 {plateau}，Lion 取 {lion}，"
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
