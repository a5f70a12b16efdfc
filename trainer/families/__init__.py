"""Model families behind one small interface: load components, encode prompts, training target, names."""
