"""`python -m trainer lora info|resize|merge|convert`: the tools users reach for once a LoRA file exists.

keys.py reads a LoRA file into modules and their weight updates; targets.py names a base model's layers as
LoRA files do; info.py, resize.py, merge.py and convert.py each do one job; cli.py wires them to argparse.
"""
