"""The Tools tab's words in English and Chinese (merged into ui/i18n.py's TEXT).

A key `X_help` is the help line under the field whose label is `X`.
"""

TOOLS_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "tools_intro": "Tools for LoRA files you already have. Each one runs the same command as "
        "`python -m trainer lora …` in a terminal; the command is shown above its result.",
        "tools_result": "Result",
        "tools_overwrite": "Overwrite",
        "tools_overwrite_help": "Replace the output if it already exists (otherwise the tool refuses, so nothing "
        "is lost by accident).",
        "tools_same_precision": "(same as the file)",
        "tools_missing": "Fill in “{field}” first.",
        "tools_whole": "“{field}” must be a whole number of 1 or more.",
        "tools_done": "Done.",
        "tools_refused": "The tool refused:",
        "tools_hint": "Hint:",
        "tools_failed": "The tool stopped with an unexpected error (exit code {code}). What it said last is "
        "shown below.",

        "tools_info_title": "Info: what is in a LoRA file",
        "tools_info_about": "Shows the model family (SD1.5, SDXL, Flux.1…), the network type, rank (dim), alpha, "
        "and what the file recorded of its training: settings, and how often each caption tag appeared.",
        "tools_info_file": "LoRA file",
        "tools_info_file_help": "Full path of a .safetensors file, e.g. D:\\lora\\my_char.safetensors.",
        "tools_info_run": "Show info",

        "tools_resize_title": "Resize: lower the rank (dim)",
        "tools_resize_about": "Makes a LoRA smaller by keeping the strongest directions of each layer (SVD, like "
        "sd-scripts' resize_lora). A rank-128 LoRA usually looks almost the same at 32 and takes a quarter of the "
        "space; alpha is adjusted so the strength stays. DyLoRA files are simply cut at the rank. LoHa/LoKr "
        "cannot be resized.",
        "tools_resize_file": "LoRA file",
        "tools_resize_file_help": "The LoRA or LoCon file to shrink.",
        "tools_resize_rank": "New rank",
        "tools_resize_rank_help": "Typical 16–64. Lower: smaller file, fewer details kept. With a dynamic method "
        "this is the highest rank any layer may keep.",
        "tools_resize_conv_rank": "Conv rank (LoCon)",
        "tools_resize_conv_rank_help": "New rank of the 3×3 conv layers of a LoCon. Empty: same as the new rank.",
        "tools_resize_method": "Dynamic method",
        "tools_resize_method_help": "none: every layer gets the new rank. sv_ratio / sv_fro / sv_cumulative: each "
        "layer keeps only as much rank as it needs, so simple layers shrink further.",
        "tools_resize_param": "Dynamic parameter",
        "tools_resize_param_help": "Only with a dynamic method. sv_ratio: keep singular values within this factor "
        "of the largest, e.g. 8. sv_fro / sv_cumulative: share to keep, e.g. 0.9 (higher: closer to the original).",
        "tools_resize_precision": "Save precision",
        "tools_resize_precision_help": "fp16 or bf16 halve the file size of a float file; the result looks the same.",
        "tools_resize_output_path": "Output file",
        "tools_resize_output_path_help": "Where the smaller LoRA goes, e.g. D:\\lora\\my_char_r32.safetensors.",
        "tools_resize_run": "Resize",

        "tools_merge_title": "Merge: bake LoRAs into a base model",
        "tools_merge_about": "Adds the LoRAs to the base model's weights and saves a new model that behaves as if "
        "the LoRAs were always loaded at these strengths. Works with LoRA, LoCon, LoHa and LoKr. Needs enough memory "
        "for the whole model (bf16 halves it).",
        "tools_merge_base": "Base model",
        "tools_merge_base_help": "A checkpoint file (.safetensors) or a diffusers model folder: the model the "
        "LoRAs were trained on.",
        "tools_merge_files": "LoRA files",
        "tools_merge_files_help": "One path a line; merged in this order.",
        "tools_merge_ratios": "Strengths",
        "tools_merge_ratios_help": "Optional: one number per LoRA file, in the same order (like the weight in "
        "<lora:name:0.8>), e.g. 1 and 0.6. Empty: 1 for each.",
        "tools_merge_precision": "Precision",
        "tools_merge_precision_help": "The model is loaded, merged and saved in this precision. float is the most "
        "exact; fp16/bf16 halve the memory and the file size.",
        "tools_merge_output_path": "Output",
        "tools_merge_output_path_help": "Ending in .safetensors: one checkpoint file for A1111, Forge and ComfyUI (for "
        "Flux.1 the transformer only). Any other name: a diffusers model folder.",
        "tools_merge_run": "Merge",

        "tools_convert_title": "Convert: kohya ⇄ diffusers layout",
        "tools_convert_about": "Rewrites a LoRA/LoCon's key names without changing its weights: kohya is what "
        "A1111, Forge and ComfyUI load; diffusers is what diffusers' load_lora_weights and peft use.",
        "tools_convert_file": "LoRA file",
        "tools_convert_file_help": "The LoRA or LoCon file to convert.",
        "tools_convert_to": "Convert to",
        "tools_convert_to_help": "kohya: for WebUI and ComfyUI. diffusers: for diffusers scripts.",
        "tools_convert_output_path": "Output file",
        "tools_convert_output_path_help": "A new .safetensors path, e.g. D:\\lora\\my_char_kohya.safetensors.",
        "tools_convert_run": "Convert",
    },
    "zh": {
        "tools_intro": "处理已有 LoRA 文件的小工具。每个按钮执行的命令和在终端里运行 `python -m trainer lora …` "
        "完全一样，结果上方会显示这条命令。",
        "tools_result": "结果",
        "tools_overwrite": "覆盖已有文件",
        "tools_overwrite_help": "输出文件已存在时直接替换（不勾选则工具会拒绝执行，避免误删文件）。",
        "tools_same_precision": "（与原文件相同）",
        "tools_missing": "请先填写“{field}”。",
        "tools_whole": "“{field}”必须是不小于 1 的整数。",
        "tools_done": "完成。",
        "tools_refused": "工具拒绝执行：",
        "tools_hint": "建议：",
        "tools_failed": "工具意外出错退出（退出码 {code}），下面是它最后输出的几行。",

        "tools_info_title": "查看信息：LoRA 文件里有什么",
        "tools_info_about": "显示底模类型（SD1.5、SDXL、Flux.1…）、网络类型、rank（dim）、alpha、"
        "以及文件里记录的训练信息：训练参数、各个标签（tag）出现的次数。",
        "tools_info_file": "LoRA 文件",
        "tools_info_file_help": ".safetensors 文件的完整路径，例如 D:\\lora\\my_char.safetensors。",
        "tools_info_run": "查看信息",

        "tools_resize_title": "调整 rank：给 LoRA 瘦身",
        "tools_resize_about": "用 SVD 保留每层最主要的部分，把 LoRA 变小（和 sd-scripts 的 resize_lora 一样）。"
        "128 的 LoRA 降到 32 通常效果几乎不变，体积只有四分之一；alpha 会自动换算，强度不变。"
        "DyLoRA 直接按 rank 截取。LoHa/LoKr 不能调整。",
        "tools_resize_file": "LoRA 文件",
        "tools_resize_file_help": "要瘦身的 LoRA 或 LoCon 文件。",
        "tools_resize_rank": "新 rank",
        "tools_resize_rank_help": "常用 16–64。越小文件越小，保留的细节也越少。选了动态方法时，这是每层最多保留的 rank。",
        "tools_resize_conv_rank": "卷积层 rank（LoCon）",
        "tools_resize_conv_rank_help": "LoCon 中 3×3 卷积层的新 rank。留空则与新 rank 相同。",
        "tools_resize_method": "动态方法",
        "tools_resize_method_help": "none：每层都用新 rank。sv_ratio / sv_fro / sv_cumulative：每层按需要保留 rank，"
        "信息少的层会压得更小。",
        "tools_resize_param": "动态参数",
        "tools_resize_param_help": "只在选了动态方法时使用。sv_ratio：保留不小于最大奇异值 1/该值 的部分，例如 8；"
        "sv_fro / sv_cumulative：保留的比例，例如 0.9（越高越接近原文件）。",
        "tools_resize_precision": "保存精度",
        "tools_resize_precision_help": "float 文件存成 fp16 或 bf16 体积减半，出图看不出区别。",
        "tools_resize_output_path": "输出文件",
        "tools_resize_output_path_help": "瘦身后 LoRA 的保存路径，例如 D:\\lora\\my_char_r32.safetensors。",
        "tools_resize_run": "开始调整",

        "tools_merge_title": "融合：把 LoRA 合进底模",
        "tools_merge_about": "把 LoRA 加到底模的权重里，另存为新模型，效果相当于一直按这些权重挂着 LoRA。"
        "支持 LoRA、LoCon、LoHa、LoKr。需要能装下整个模型的内存（bf16 可减半）。",
        "tools_merge_base": "底模",
        "tools_merge_base_help": "底模文件（.safetensors）或 diffusers 模型文件夹，也就是训练这些 LoRA 用的底模。",
        "tools_merge_files": "LoRA 文件",
        "tools_merge_files_help": "每行一个路径，按顺序依次融合。",
        "tools_merge_ratios": "权重",
        "tools_merge_ratios_help": "可选：每个 LoRA 一个数，顺序与上面一致（相当于 <lora:名字:0.8> 里的权重），"
        "例如 1 和 0.6。留空则都按 1。",
        "tools_merge_precision": "精度",
        "tools_merge_precision_help": "加载、融合和保存模型用的精度。float 最精确；fp16/bf16 内存和文件都减半。",
        "tools_merge_output_path": "输出",
        "tools_merge_output_path_help": "以 .safetensors 结尾：保存成一个 WebUI（A1111/Forge）和 ComfyUI 能直接用的大模型文件"
        "（Flux.1 只保存 transformer 部分）。其他名字：保存为 diffusers 模型文件夹。",
        "tools_merge_run": "开始融合",

        "tools_convert_title": "转换格式：kohya ⇄ diffusers",
        "tools_convert_about": "只改 LoRA/LoCon 的键名，不改权重：kohya 格式给 WebUI（A1111/Forge）和 ComfyUI 用，"
        "diffusers 格式给 diffusers 的 load_lora_weights 和 peft 用。",
        "tools_convert_file": "LoRA 文件",
        "tools_convert_file_help": "要转换的 LoRA 或 LoCon 文件。",
        "tools_convert_to": "转换为",
        "tools_convert_to_help": "kohya：给 WebUI 和 ComfyUI 用。diffusers：给 diffusers 脚本用。",
        "tools_convert_output_path": "输出文件",
        "tools_convert_output_path_help": "新的 .safetensors 路径，例如 D:\\lora\\my_char_kohya.safetensors。",
        "tools_convert_run": "开始转换",
    },
}
